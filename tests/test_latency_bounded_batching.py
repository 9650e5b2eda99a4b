"""``BatchConfig.max_batch_duration_secs`` on a TestStream: thin traffic flushes by time,
load fills batches.

This drives the ``BatchElements`` step ``RunInference`` applies (built from
``BatchConfig.batch_elements_kwargs()``) on the DirectRunner's TestStream clock. Beam's
stateful batching sets its buffering timer from the ``clock`` it is given; the TestStream
clock starts at 0, so the test hands Beam a zero-based clock, the seam Beam's own tests
use. (With RunInference itself downstream, the DirectRunner lets the TestStream clock run
ahead of a step that is still loading the model, so timers look due early; the real-time
bound through RunInference is checked in tests/test_pipelines_streaming.py.)
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

import beam_infer as bi

BOUND = 10.0  # seconds of TestStream processing time


class _ZeroClock:
    def __call__(self) -> float:
        return 0.0


def test_thin_traffic_flushes_on_time_and_load_fills_batches():
    config = bi.BatchConfig(min_batch_size=8, max_batch_size=8,
                            max_batch_duration_secs=BOUND)
    stream = (TestStream()
              .advance_watermark_to(Timestamp(0))
              .add_elements([1])
              .advance_processing_time(BOUND / 2)  # not due yet: keeps buffering
              .add_elements([2])
              .advance_processing_time(BOUND)  # due: [1, 2] leaves without waiting for 8
              .add_elements(list(range(10, 26)))  # a burst: two full batches
              .advance_watermark_to_infinity())
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    batches = (pipeline
               | stream
               | beam.BatchElements(**config.batch_elements_kwargs(), clock=_ZeroClock())
               | beam.Map(sorted))
    assert_that(batches, equal_to([[1, 2], list(range(10, 18)), list(range(18, 26))]))
    pipeline.run().wait_until_finish()


def test_without_a_duration_streaming_gets_batches_of_one():
    config = bi.BatchConfig(min_batch_size=8, max_batch_size=8)
    stream = (TestStream()
              .advance_watermark_to(Timestamp(0))
              .add_elements([1])
              .advance_processing_time(BOUND * 100)
              .add_elements([2])
              .advance_watermark_to_infinity())
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    batches = (pipeline | stream | beam.BatchElements(**config.batch_elements_kwargs())
               | beam.Map(len))
    # Batches never cross bundles (Beam #29175): min_batch_size cannot be met.
    assert_that(batches, equal_to([1, 1]))
    pipeline.run().wait_until_finish()
