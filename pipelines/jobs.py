"""What every job shares: Beam's example contract and the printed, written answers."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions
from apache_beam.runners.runner import PipelineResult

from pipelines import services


def job_options(pipeline_args: Sequence[str], save_main_session: bool) -> PipelineOptions:
    """Beam's options from every flag the job did not take (``--runner`` among them)."""
    options = PipelineOptions(list(pipeline_args))
    options.view_as(SetupOptions).save_main_session = save_main_session
    return options


def check_services(args: argparse.Namespace, pipeline_args: Sequence[str], *,
                   pubsub_topics: Sequence[str | None] = (),
                   pubsub_subscriptions: Sequence[str | None] = ()) -> None:
    """Fails in seconds if a cloud service the job's flags name cannot be used.

    Raises:
        services.ServiceError: see ``pipelines.services``.
    """
    services.check_job_services(
        [*vars(args).values(), *pipeline_args],
        pubsub_topics=pubsub_topics, pubsub_subscriptions=pubsub_subscriptions)


def run_job(build: Callable[[beam.Pipeline], Any], options: PipelineOptions,
            test_pipeline: beam.Pipeline | None = None) -> PipelineResult:
    """Builds the job on ``test_pipeline`` or a new pipeline, runs it to the end."""
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def print_and_write(lines: beam.PCollection, output: str) -> None:
    """Prints each answer line and writes them all to one text file ``output``."""
    _ = lines | "Print" >> beam.Map(print)
    _ = lines | "WriteResults" >> beam.io.WriteToText(output, shard_name_template="")
