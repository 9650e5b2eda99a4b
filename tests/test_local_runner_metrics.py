"""Long local runs keep readable metrics: Beam's FnApiRunner folds them lazily per bundle.

``beam_infer._local_runner`` has the analysis. The first test is the upstream bug in
Beam's own terms (it fails, telling us to drop the patch, once Beam folds eagerly); the
others run pipelines of more than 5,000 bundles and read their metrics.
"""

from __future__ import annotations

import itertools
import sys

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.metrics import Metrics, monitoring_infos
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration

import beam_infer as bi
from beam_infer import _local_runner
from pipelines import models

BUNDLES = 5_200


def _fold_like_run_stages(consolidate, bundles: int):
    """What ``FnApiRunner.run_stages`` does with each bundle's metrics."""
    totals = [monitoring_infos.int64_user_counter("ns", "bundles", 1)]
    for _ in range(bundles):
        totals = consolidate(itertools.chain(
            [monitoring_infos.int64_user_counter("ns", "bundles", 1)], totals))
    return totals


def test_beam_folds_each_bundle_lazily_and_the_patch_folds_eagerly():
    assert _local_runner.needs_patch()
    lazy = _fold_like_run_stages(monitoring_infos.consolidate, BUNDLES)
    try:
        list(lazy)
        raise AssertionError("Beam's consolidate no longer nests: drop the patch")
    except RecursionError:
        pass
    (total,) = _fold_like_run_stages(_local_runner._eager_consolidate, BUNDLES)
    assert monitoring_infos.extract_counter_value(total) == BUNDLES + 1
    assert sys.getrecursionlimit() < BUNDLES


def test_the_patch_is_applied_once_and_by_every_run_inference(zoo):
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    _ = beam.Pipeline() | beam.Create([b""]) | bi.RunInference(bi.ModelSpec(model_path=zoo.five))
    assert fn_runner.consolidate_monitoring_infos is _local_runner._eager_consolidate
    assert bi.patch_local_runner_metrics() is True
    assert _local_runner.needs_patch("2.78.0") is False


class _OnePerBundle(RestrictionProvider):
    def initial_restriction(self, element: int) -> OffsetRange:
        return OffsetRange(0, element)

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element: int, restriction: OffsetRange) -> int:
        return restriction.size()

    def split(self, element: int, restriction: OffsetRange):
        yield restriction


_TRACKER = beam.DoFn.RestrictionParam(_OnePerBundle())


class EmitOnePerBundle(beam.DoFn):
    """Emits 0..n-1, one per bundle: each claims one position and defers the rest."""

    def start_bundle(self) -> None:
        Metrics.counter("test", "bundles").inc()

    def process(self, n: int, tracker=_TRACKER):
        position = tracker.current_restriction().start
        if tracker.try_claim(position):
            yield models.make_example(float(position)).SerializeToString()
            tracker.defer_remainder(Duration(micros=1))  # the next one in a new bundle


def _counters(result) -> dict[str, int]:
    metrics = result.metrics().query(MetricsFilter())["counters"]
    return {m.key.metric.name: m.committed for m in metrics}


def test_a_run_of_more_than_5000_bundles_has_readable_metrics(zoo, tmp_path):
    spec = bi.ModelSpec(model_path=zoo.five, batching=bi.BatchConfig(max_batch_size=8))
    pipeline = beam.Pipeline(runner="FnApiRunner")
    logs = (pipeline | beam.Create([BUNDLES]) | beam.ParDo(EmitOnePerBundle())
            | bi.RunInference(spec))
    _ = logs | beam.Map(lambda log: Metrics.counter("test", "answer_sum").inc(
        int(log.predict_log.response.outputs["output_0"].float_val[0])))
    result = pipeline.run()
    result.wait_until_finish()
    counters = _counters(result)
    assert counters["bundles"] >= BUNDLES
    assert counters["num_inferences"] == BUNDLES
    assert counters["answer_sum"] == 5 * sum(range(BUNDLES))

