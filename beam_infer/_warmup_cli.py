"""``beam-infer warmup MODEL_PATH --from INPUTS``: write TF Serving warm-up requests.

A self-contained subcommand (``warmup_command(argv) -> exit code``) for the
``beam-infer`` command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import tensorflow as tf

from beam_infer._errors import BeamInferError
from beam_infer._warmup import MAX_RECORDS, write_warmup_requests


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``warmup`` arguments, added to ``parser`` (a subparser) or a new parser."""
    parser = parser or argparse.ArgumentParser(
        prog="beam-infer warmup",
        description="Write assets.extra/tf_serving_warmup_requests into a SavedModel "
                    "from sample inputs, so every load replays them before real traffic.")
    parser.add_argument("model_path", metavar="MODEL_PATH",
                        help="A SavedModel directory (one version folder) on any Beam "
                             "filesystem.")
    parser.add_argument("--from", dest="inputs", required=True, metavar="INPUTS",
                        help="TFRecord file of serialized tf.train.Example (glob allowed); "
                             f"the first {MAX_RECORDS} records are used.")
    parser.add_argument("--signature_name", default="serving_default",
                        help="The signature the requests are for (default serving_default).")
    return parser


def warmup_command(argv: Sequence[str] | None = None) -> int:
    """Runs the subcommand; prints the file written. Returns 0, or 2 on a usage error.

    Example:
        >>> warmup_command(["/models/five/1", "--from", "samples.tfrecord"])
        wrote 4 warm-up requests to /models/five/1/assets.extra/tf_serving_warmup_requests
        0
    """
    args = build_parser().parse_args(argv)
    files = tf.io.gfile.glob(args.inputs)
    if not files:
        print(f"beam-infer warmup: no file matches --from {args.inputs!r}; pass a TFRecord "
              "of serialized tf.train.Example.", file=sys.stderr)
        return 2
    records = []
    for raw in tf.data.TFRecordDataset(sorted(files)).take(MAX_RECORDS).as_numpy_iterator():
        records.append(bytes(raw))
    try:
        target = write_warmup_requests(args.model_path, records,
                                       signature_name=args.signature_name)
    except BeamInferError as e:
        print(f"beam-infer warmup: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(records)} warm-up requests to {target}")
    return 0
