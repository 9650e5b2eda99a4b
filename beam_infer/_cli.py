"""The ``beam-infer`` command: look inside a SavedModel, score a table, write warm-up data.

Each subcommand is one ``add_<name>(subparsers)`` function that registers its parser and
sets ``handler`` (and ``passes_unknown_args`` when it forwards flags to a Beam job), so
new subcommands are added without touching the others::

    beam-infer inspect /models/five/1          # like saved_model_cli show --all
    beam-infer inspect /models/five/1 --json   # the model structure as JSON
    beam-infer inspect grpc://host:8500/models/five   # a model behind an endpoint
    beam-infer score --input=in.csv --model_path=/models/five/1 --output=out
    beam-infer warmup /models/five/1 --from samples.tfrecord
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from beam_infer import remote
from beam_infer._errors import BeamInferError, ConfigurationError
from beam_infer._quiet import quiet_startup
from beam_infer._signatures import Signature, TensorInfo, signatures_of
from beam_infer._signatures import plan as plan_signatures
from beam_infer.saved_model._files import read_saved_model
from beam_infer.saved_model._warmup import MAX_RECORDS as MAX_WARMUP_RECORDS
from beam_infer.saved_model._warmup import write_warmup_requests

PROG = "beam-infer"
VERBOSE_FLAG = "--verbose"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``beam-infer`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    ``--verbose`` anywhere keeps TensorFlow's and Beam's start-up logs and prints the
    traceback of a failure; otherwise start-up is quiet and a failure is one line.

    Example:
        >>> main(["inspect", "/models/five/1", "--json"])
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = VERBOSE_FLAG in argv
    argv = [a for a in argv if a != VERBOSE_FLAG]
    quiet_startup(verbose)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "passes_unknown_args", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.handler(args, unknown)
    except BeamInferError as e:
        if verbose:
            traceback.print_exc()
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one line, the traceback behind --verbose
        if verbose:
            traceback.print_exc()
        text = " ".join(str(e).split()) or "(no message)"
        print(f"{PROG} {args.command}: error: {type(e).__name__}: {text} (rerun with "
              f"{VERBOSE_FLAG} for the traceback)", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Score data with TensorFlow SavedModels in Apache Beam.",
        epilog=f"{VERBOSE_FLAG} (anywhere): keep TensorFlow's and Beam's start-up logs and "
               "print the traceback of a failure.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


# --- inspect ---------------------------------------------------------------------------


def add_inspect(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect", help="Print every MetaGraph's signatures (saved_model_cli show --all).",
        description="Print every tag set and signature of a SavedModel: method, inputs and "
                    "outputs with dtype and shape, and whether beam_infer can serve it.")
    parser.add_argument("model_path", metavar="MODEL_PATH",
                        help="SavedModel directory on any Beam filesystem, or an endpoint "
                             "URL (grpc://, http(s)://, vertex://; its metadata is read).")
    parser.add_argument("--json", action="store_true",
                        help="Print the model structure as JSON instead.")
    parser.set_defaults(handler=_inspect)


def describe_model(model_path: str) -> dict[str, Any]:
    """The structure of a SavedModel as plain data (what ``inspect --json`` prints).

    Returns:
        ``{"model_path", "meta_graphs": [{"tags", "signatures": [{"name",
        "method_name", "inputs", "outputs", "beam_infer"}]}]}``; tensors are
        ``{"alias", "dtype": "DT_FLOAT", "shape": [-1, 1] | None, "tensor_name"}`` and
        ``beam_infer`` says whether ``RunInference`` serves the signature
        (``{"servable": True, "operation": "predict"}``) or why not.

    Raises:
        ModelPathError: no SavedModel at ``model_path``.
    """
    if remote.is_endpoint_url(model_path):
        # An endpoint: its metadata, read now, as one "MetaGraph" with no tags.
        backend = remote.RemoteBackend(remote.EndpointSpec.from_url(model_path))
        return {"model_path": model_path, "endpoint": backend.spec.describe(),
                "meta_graphs": [{"tags": [], "signatures": _describe_signatures(
                    model_path, backend.signature_defs)}]}
    saved_model = read_saved_model(model_path)
    return {
        "model_path": model_path,
        "meta_graphs": [
            {"tags": list(meta_graph.meta_info_def.tags),
             "signatures": _describe_signatures(model_path, meta_graph.signature_def)}
            for meta_graph in saved_model.meta_graphs
        ],
    }


def _describe_signatures(where: str, signature_defs: Mapping[str, Any]) -> list[dict[str, Any]]:
    available = signatures_of(signature_defs)
    return [_describe_signature(where, available, signature_defs[name], signature)
            for name, signature in available.items()]


def _describe_signature(where: str, available: Mapping[str, Signature], signature_def: Any,
                        signature: Signature) -> dict[str, Any]:

    def tensors(infos: Sequence[TensorInfo], protos: Any) -> list[dict[str, Any]]:
        return [{"alias": t.alias, "dtype": types_pb2.DataType.Name(protos[t.alias].dtype),
                 "shape": None if t.shape is None else [-1 if d is None else d for d in t.shape],
                 "tensor_name": protos[t.alias].name} for t in infos]

    try:
        plan = plan_signatures(available, (signature.name,), where)
        serving = {"servable": True, "operation": plan.operation.value,
                   "feed": plan.feed.value}
    except BeamInferError as e:
        serving = {"servable": False, "reason": str(e)}
    return {"name": signature.name, "method_name": signature.method_name,
            "inputs": tensors(signature.inputs, signature_def.inputs),
            "outputs": tensors(signature.outputs, signature_def.outputs),
            "beam_infer": serving}


def format_model(description: dict[str, Any]) -> str:
    """``saved_model_cli show --all``-style text for ``describe_model``'s result."""
    lines = [description["endpoint"], ""] if "endpoint" in description else []
    for meta_graph in description["meta_graphs"]:
        tags = ", ".join(f"'{t}'" for t in meta_graph["tags"])
        lines.append("The endpoint serves the following SignatureDefs:" if "endpoint" in
                     description else
                     f"MetaGraphDef with tag-set: {tags} contains the following SignatureDefs:")
        for signature in meta_graph["signatures"]:
            lines += ["", f"signature_def['{signature['name']}']:"]
            for kind, key in (("input", "inputs"), ("output", "outputs")):
                lines.append("  The given SavedModel SignatureDef contains the following "
                             f"{kind}(s):")
                for tensor in signature[key]:
                    shape = tensor["shape"]
                    shape_text = "unknown_rank" if shape is None else (
                        "(" + ", ".join(str(d) for d in shape) + ")")
                    lines += [f"    {key}['{tensor['alias']}'] tensor_info:",
                              f"        dtype: {tensor['dtype']}",
                              f"        shape: {shape_text}",
                              f"        name: {tensor['tensor_name']}"]
            lines.append(f"  Method name is: {signature['method_name']}")
            serving = signature["beam_infer"]
            lines.append("  beam_infer RunInference: " + (
                serving["operation"] if serving["servable"]
                else "not servable: " + serving["reason"]))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _inspect(args: argparse.Namespace, unknown: Sequence[str]) -> int:
    description = describe_model(args.model_path)
    if args.json:
        print(json.dumps(description, indent=2))
    else:
        print(format_model(description), end="")
    return 0


# --- score -----------------------------------------------------------------------------


def add_score(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "score", add_help=False,
        help="Run the batch scoring job (pipelines.batch_scoring); flags go to the job.",
        description="Run pipelines.batch_scoring; every flag (--input, --model_path, "
                    "--output_format, --runner, ...) is passed to it. Exits with the job's "
                    "code: 0 ok, 1 error, 2 usage, 3 too many failures, 4 nothing scored.")
    parser.set_defaults(handler=_score, passes_unknown_args=True)


#: The checkout module ``score`` runs: named, never imported by name in the library.
BATCH_SCORING_JOB = "pipelines.batch_scoring"


def _score(args: argparse.Namespace, unknown: Sequence[str]) -> int:
    batch_scoring = _checkout_job(BATCH_SCORING_JOB)
    if "-h" in unknown or "--help" in unknown:
        batch_scoring.parse_args(["--help"], prog=f"{PROG} score")
    # The job's exit codes: 0 ok, 1 error, 2 usage, 3 too many failures, 4 nothing scored.
    return batch_scoring.main(list(unknown), prog=f"{PROG} score")


def _checkout_job(module: str) -> Any:
    """The job ``module`` of a beam_infer checkout, found on ``sys.path`` as ``python -m`` does.

    The library does not import the jobs (``pipelines/``): they are examples that live in
    the checkout, are not installed, and reach workers pickled by value
    (docs/packaging.md). ``score`` is a launcher for one of them, like ``python -m
    pipelines.batch_scoring``: it looks the module up by name when the command runs and
    calls its ``main`` in this process, so the job's output, progress lines (counted in
    the ``sys.modules`` copy of ``pipelines.progress``), pickling and exit codes are the
    same as when it is run directly. Moving the job into the library instead would
    install a job (and its pickled-by-value helpers) with every ``pip install``.

    Raises:
        ConfigurationError: no checkout on the path (or the job cannot be imported).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigurationError(
            "beam-infer score runs the batch scoring job, pipelines/batch_scoring.py, which "
            "comes with a checkout of beam_infer and is not installed with the library "
            f"({e}). Run it from the checkout's root folder (python -m "
            "pipelines.batch_scoring works there too)."
        ) from e


# --- warmup ----------------------------------------------------------------------------


def add_warmup(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "warmup", help="Write TF Serving warm-up requests into a SavedModel.",
        description="Write assets.extra/tf_serving_warmup_requests into a SavedModel from "
                    "sample inputs, so every load replays them before real traffic.")
    parser.add_argument("model_path", metavar="MODEL_PATH",
                        help="A SavedModel directory (one version folder) on any Beam "
                             "filesystem.")
    parser.add_argument("--from", dest="inputs", required=True, metavar="INPUTS",
                        help="Sample inputs: a JSON lines file (.jsonl; one element per "
                             "line, an object keyed by input alias or, for one input, the "
                             "value), a .npy array or .npz arrays by alias (one request per "
                             "row), or else a TFRecord of serialized tf.train.Example (glob "
                             f"allowed). At most {MAX_WARMUP_RECORDS} are used.")
    parser.add_argument("--signature_name", default="serving_default",
                        help="The signature the requests are for (default serving_default).")
    parser.set_defaults(handler=_warmup)


def _warmup(args: argparse.Namespace, unknown: Sequence[str]) -> int:
    files = sorted(tf.io.gfile.glob(args.inputs))
    if not files:
        raise ConfigurationError(
            f"no file matches --from {args.inputs!r}; pass a JSON lines file, a .npy or "
            ".npz file, or a TFRecord of serialized tf.train.Example.")
    samples = read_warmup_samples(files)
    target = write_warmup_requests(args.model_path, samples,
                                   signature_name=args.signature_name)
    count = len(samples) if not isinstance(samples, dict) else \
        len(next(iter(samples.values())))
    print(f"wrote {count} warm-up requests to {target}")
    return 0


def read_warmup_samples(files: Sequence[str]) -> Any:
    """The samples ``warmup --from`` names, in what ``write_warmup_requests`` takes.

    ``.jsonl``/``.json``: one element per line (JSON lists become arrays, cast to the
    signature's dtypes); ``.npy``: one array, a request per row; ``.npz``: arrays by
    input alias, a request per row; anything else: TFRecords of serialized examples.
    At most the first ``MAX_WARMUP_RECORDS`` samples are kept.

    Raises:
        ConfigurationError: a file cannot be read as its kind.
    """
    kinds = {_sample_kind(f) for f in files}
    if len(kinds) > 1:
        raise ConfigurationError(
            f"--from matches files of different kinds ({', '.join(sorted(kinds))}); "
            "pass files of one kind.")
    kind = kinds.pop()
    try:
        if kind == "jsonl":
            samples: list[Any] = []
            for path in files:
                with tf.io.gfile.GFile(path) as f:
                    samples += [json.loads(line) for line in f if line.strip()]
            return samples[:MAX_WARMUP_RECORDS]
        if kind in ("npy", "npz"):
            with tf.io.gfile.GFile(files[0], "rb") as f:
                loaded = np.load(io.BytesIO(f.read()), allow_pickle=False)
            if kind == "npy":
                return loaded[:MAX_WARMUP_RECORDS]
            return {alias: loaded[alias][:MAX_WARMUP_RECORDS] for alias in loaded.files}
    except (ValueError, OSError) as e:
        raise ConfigurationError(
            f"--from {files[0]!r} cannot be read as {kind}: {type(e).__name__}: {e}") from e
    dataset = tf.data.TFRecordDataset(files).take(MAX_WARMUP_RECORDS)
    return [bytes(raw) for raw in dataset.as_numpy_iterator()]


def _sample_kind(path: str) -> str:
    lowered = path.lower()
    for suffix, kind in ((".jsonl", "jsonl"), (".json", "jsonl"), (".npy", "npy"),
                         (".npz", "npz")):
        if lowered.endswith(suffix):
            return kind
    return "tfrecord"


SUBCOMMANDS: list[Callable[[Any], None]] = [add_inspect, add_score, add_warmup]

if __name__ == "__main__":
    sys.exit(main())
