"""Commands that prepare the local GCS and Pub/Sub emulators for the jobs, and read results.

For trying the cloud paths without a cloud account (README, "Trying the cloud paths
locally"). They talk only to the emulators named by ``STORAGE_EMULATOR_HOST`` and
``PUBSUB_EMULATOR_HOST``, with no credentials, and refuse to run without them, so they
never write to a real bucket or topic::

    python -m pipelines.emulators copy work/keyed/five_model gs://demo/models/five/1
    python -m pipelines.emulators cat gs://demo/keyed/answers.txt
    python -m pipelines.emulators create-pubsub \\
        projects/demo-project/topics/examples=projects/demo-project/subscriptions/examples
    python -m pipelines.emulators publish projects/demo-project/topics/examples 1 2 3 --raw junk
    python -m pipelines.emulators pull projects/demo-project/subscriptions/logs --count 4

``copy`` uploads a local directory one object per file (as ``gcloud storage cp -r``
does: no folder objects) and creates the bucket if needed; ``cat`` prints every object
whose name starts with the path (all shards of an output prefix). ``pull`` prints each
PredictionLog as ``x=.. y=.. version=..`` and each JSON dead letter as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from pipelines import services

PROJECT = "emulator"


def copy(source: str, destination: str) -> list[str]:
    """Uploads every file under the local ``source`` to ``gs://bucket/prefix``.

    Returns:
        The object names written, sorted.
    """
    bucket_name, _, prefix = destination.removeprefix("gs://").partition("/")
    if not destination.startswith("gs://") or not bucket_name:
        raise ValueError(f"copy writes to gs://BUCKET/PREFIX; got {destination!r}.")
    if not os.path.isdir(source):
        raise ValueError(f"copy reads a local directory; {source!r} is none.")
    client = _storage_client()
    bucket = client.lookup_bucket(bucket_name) or client.create_bucket(bucket_name)
    written = []
    for root, _, files in os.walk(source):
        for name in files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, source).replace(os.sep, "/")
            blob_name = f"{prefix.rstrip('/')}/{relative}" if prefix else relative
            bucket.blob(blob_name).upload_from_filename(path)
            written.append(blob_name)
    return sorted(written)


def cat(prefix: str) -> list[tuple[str, bytes]]:
    """``(gs:// path, contents)`` of every object whose name starts with ``prefix``."""
    bucket_name, _, name = prefix.removeprefix("gs://").partition("/")
    if not prefix.startswith("gs://") or not bucket_name:
        raise ValueError(f"cat reads gs://BUCKET/NAME; got {prefix!r}.")
    client = _storage_client()
    return [(f"gs://{bucket_name}/{blob.name}", blob.download_as_bytes())
            for blob in client.list_blobs(bucket_name, prefix=name)]


def create_pubsub(pairs: Sequence[str]) -> None:
    """Creates each ``TOPIC`` or ``TOPIC=SUBSCRIPTION`` (topic and a subscription to it)."""
    publisher, subscriber = _pubsub_clients()
    for pair in pairs:
        topic, _, subscription = pair.partition("=")
        publisher.create_topic(name=topic, timeout=10)
        if subscription:
            subscriber.create_subscription(name=subscription, topic=topic, timeout=10)


def publish(topic: str, values: Sequence[float], raw: Sequence[str] = ()) -> int:
    """Publishes one demo Example per value (feature ``x``) and each ``raw`` text as is."""
    from pipelines import models  # TensorFlow: imported only by the commands that need it

    publisher, _ = _pubsub_clients()
    messages = [models.make_example(v).SerializeToString() for v in values]
    messages += [text.encode() for text in raw]
    for future in [publisher.publish(topic, data) for data in messages]:
        future.result(timeout=10)
    return len(messages)


def pull(subscription: str, count: int, timeout_secs: float) -> list[str]:
    """Pulls (and acknowledges) up to ``count`` messages within ``timeout_secs``; returns
    them as text lines (see ``describe``)."""
    _, subscriber = _pubsub_clients()
    lines: list[str] = []
    deadline = time.monotonic() + timeout_secs
    while len(lines) < count and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=count - len(lines),
                                   return_immediately=True, timeout=5)
        if not response.received_messages:
            time.sleep(0.2)
            continue
        subscriber.acknowledge(subscription=subscription,
                               ack_ids=[m.ack_id for m in response.received_messages])
        lines += [describe(m.message.data) for m in response.received_messages]
    return lines


def describe(data: bytes) -> str:
    """A JSON dead letter as it is; a PredictionLog as ``x=.. y=.. version=..``."""
    from tensorflow_serving.apis import prediction_log_pb2

    from pipelines import models

    if data.startswith(b"{"):
        try:
            return json.dumps(json.loads(data), sort_keys=True)
        except ValueError:
            pass
    try:
        predict_log = prediction_log_pb2.PredictionLog.FromString(data).predict_log
        x = models.example_value(predict_log.request.inputs[models.INPUT_ALIAS].string_val[0])
        y = predict_log.response.outputs[models.OUTPUT_ALIAS].float_val[0]
    except Exception:  # noqa: BLE001 - anything else is shown, not interpreted
        return repr(data[:200])
    return f"x={x:g} y={y:g} version={predict_log.response.model_spec.version.value}"


def _require(env: str, start: str) -> None:
    if not os.environ.get(env):
        raise SystemExit(f"pipelines.emulators talks only to local emulators: start one "
                         f"({start}) and set {env}; see the README.")


def _storage_client():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    _require(services.GCS_EMULATOR_ENV,
             "gcp-storage-emulator start --host=127.0.0.1 --port=9023 --in-memory")
    services.check_gcs(environ=os.environ)
    return storage.Client(project=PROJECT, credentials=AnonymousCredentials())


def _pubsub_clients():
    from google.cloud import pubsub_v1

    _require(services.PUBSUB_EMULATOR_ENV,
             "gcloud beta emulators pubsub start --host-port=127.0.0.1:8085")
    services.check_pubsub(topics=(), subscriptions=(), environ=os.environ)
    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.emulators",
                                     description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("copy", help="Upload a local model directory to gs://.")
    command.add_argument("source")
    command.add_argument("destination")
    command = commands.add_parser("cat", help="Print the objects under a gs:// prefix.")
    command.add_argument("prefix")
    command = commands.add_parser("create-pubsub", help="Create topics and subscriptions.")
    command.add_argument("pairs", nargs="+", metavar="TOPIC[=SUBSCRIPTION]")
    command = commands.add_parser("publish", help="Publish demo Examples (x=VALUE).")
    command.add_argument("topic")
    command.add_argument("values", nargs="*", type=float)
    command.add_argument("--raw", action="append", default=[],
                         help="Also publish this text as is (not an Example).")
    command = commands.add_parser("pull", help="Print messages of a subscription.")
    command.add_argument("subscription")
    command.add_argument("--count", type=int, default=1)
    command.add_argument("--timeout_secs", type=float, default=60.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "copy":
            names = copy(args.source, args.destination)
            print(f"copied {len(names)} files to {args.destination}")
        elif args.command == "cat":
            for _, data in cat(args.prefix):
                sys.stdout.write(data.decode("utf-8", errors="replace"))
        elif args.command == "create-pubsub":
            create_pubsub(args.pairs)
        elif args.command == "publish":
            print(f"published {publish(args.topic, args.values, args.raw)} messages")
        else:
            lines = pull(args.subscription, args.count, args.timeout_secs)
            print("\n".join(lines))
            if len(lines) < args.count:
                print(f"pulled {len(lines)} of {args.count} messages in "
                      f"{args.timeout_secs:g} s", file=sys.stderr)
                return 1
    except (ValueError, services.ServiceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
