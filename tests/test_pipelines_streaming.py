"""``pipelines.streaming`` end to end: a live version swap mid-stream, the latency bound."""

from __future__ import annotations

import os
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import streaming
from tests.support.beam_helpers import beam_infer_metrics, later, read_number_lines
from tests.support.publishing import publish


def _pubsub_transforms(args) -> dict[str, beam.PTransform]:
    """The Pub/Sub job's transforms by full label, as built from ``args``."""
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    streaming.build_pubsub(pipeline, args)
    found = {}

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            found[node.full_label] = node.transform

        visit_transform = enter_composite_transform

    pipeline.visit(Visitor())
    return found


def test_copying_a_new_version_in_switches_scoring_without_loss_or_duplicates(tmp_path):
    base = str(tmp_path / "five")
    os.makedirs(base)
    publish(base, 1)
    rate, duration = 25, 8.0
    swapped = later(4.0, lambda: publish(base, 2))
    broken = later(5.5, lambda: publish(base, 3, corrupt=True))
    started = time.time()
    result = streaming.run(
        ["--model_path", base, "--output", str(tmp_path / "out"), "--rate", str(rate),
         "--duration_secs", str(duration), "--poll_interval_secs", "0.5"],
        save_main_session=False)
    swapped.join(), broken.join()
    rows = sorted(read_number_lines(str(tmp_path / "out")), key=lambda r: r["x"])

    # Every generated element scored exactly once.
    assert [int(r["x"]) for r in rows] == list(range(len(rows)))
    assert len(rows) >= rate * duration - 1
    # Each answer is its version's: y = 5 * version * x; versions in stream order, 1 then 2.
    assert all(r["y"] == 5 * r["version"] * r["x"] for r in rows)
    versions = [int(r["version"]) for r in rows]
    assert versions == sorted(versions)
    assert set(versions) == {1, 2}
    # v2 was published 4 s after start; it serves within poll interval + load time.
    first_v2 = versions.index(2) / rate
    assert first_v2 <= 4.0 + 0.5 + 2.0 + (time.time() - started - duration)
    counters, distributions = beam_infer_metrics(result)
    assert counters["model_load_failures"] == 1  # the corrupt v3, once
    assert counters["model_version_swaps"] == 1
    assert counters["warmup_records_replayed"] == 2  # one record, loaded v1 and v2
    assert distributions["model_swap_load_latency_milli_secs"].count == 1


def test_thin_traffic_is_answered_within_the_batch_duration_bound(tmp_path):
    bound_secs = 0.2
    result = streaming.run(
        ["--work_dir", str(tmp_path), "--rate", "4", "--duration_secs", "3",
         "--max_batch_size", "64", "--max_batch_duration_secs", str(bound_secs)],
        save_main_session=False)
    rows = read_number_lines(str(tmp_path / "output"))
    assert len(rows) >= 11
    _, distributions = beam_infer_metrics(result)
    inference_ms = distributions["inference_batch_latency_micro_secs"].max / 1e3
    # The bound the issue asks for, plus the local runner's hand-over between steps
    # (tens of ms, more when other jobs share the CPU). Without the bound, elements would
    # wait for a batch of 64 or the end of the 3 s stream.
    latencies = sorted(r["latency_ms"] for r in rows)
    assert latencies[len(latencies) // 2] <= bound_secs * 1e3 + inference_ms
    assert latencies[-1] <= bound_secs * 1e3 + inference_ms + 500
    # Thin traffic: nothing waits for a full batch.
    assert distributions["inference_request_batch_size"].max < 64


def test_pubsub_graph_reads_the_subscription_and_publishes_logs(tmp_path):
    base = str(tmp_path / "five")
    os.makedirs(base)
    publish(base, 1)
    args, _ = streaming.parse_args([
        "--model_path", base, "--input_subscription", "projects/my-project/subscriptions/s",
        "--output_topic", "projects/my-project/topics/t"])
    found = _pubsub_transforms(args)
    read, write = found["ReadExamples"], found["WriteLogs"]
    assert isinstance(read, beam.io.ReadFromPubSub)
    assert read._source.full_subscription == "projects/my-project/subscriptions/s"
    assert isinstance(write, beam.io.WriteToPubSub)
    assert write._sink.full_topic == "projects/my-project/topics/t"
    spec = found["RunInference"].handler.spec
    assert (spec.model_path, spec.poll_interval_secs) == (base, 1.0)
    assert spec.batching.max_batch_duration_secs == 0.05


def test_pubsub_flags_go_together(capsys):
    with pytest.raises(SystemExit):
        streaming.parse_args(["--input_subscription", "projects/my-project/subscriptions/s"])
    assert ("--input_subscription and --output_topic go together (Pub/Sub in and out); got "
            "input_subscription='projects/my-project/subscriptions/s', output_topic=None."
            ) in capsys.readouterr().err


def test_dead_letter_topic_needs_the_pubsub_flags(capsys):
    with pytest.raises(SystemExit):
        streaming.parse_args(["--dead_letter_topic", "projects/my-project/topics/d"])
    assert ("--dead_letter_topic needs --input_subscription and --output_topic (dead letters "
            "of the Pub/Sub stream); got dead_letter_topic='projects/my-project/topics/d' "
            "without them.") in capsys.readouterr().err


def test_pubsub_graph_with_a_dead_letter_topic_publishes_dead_letters(tmp_path):
    base = str(tmp_path / "five")
    os.makedirs(base)
    publish(base, 1)
    args, _ = streaming.parse_args([
        "--model_path", base, "--input_subscription", "projects/my-project/subscriptions/s",
        "--output_topic", "projects/my-project/topics/t",
        "--dead_letter_topic", "projects/my-project/topics/d"])
    found = _pubsub_transforms(args)
    assert found["WriteDeadLetters"]._sink.full_topic == "projects/my-project/topics/d"
    assert found["WriteLogs"]._sink.full_topic == "projects/my-project/topics/t"
    assert "RunInference/Validate" in found and "FormatDeadLetters" in found
