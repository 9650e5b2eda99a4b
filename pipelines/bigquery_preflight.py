"""Fail fast when a job would use BigQuery on this machine without Google credentials.

Without credentials, Beam's BigQuery IO does not fail. It retries the credential lookup for about
20 s, then builds its apitools client without credentials, and that client starts oauth2client's
interactive sign-in ("Your browser has been opened to visit ...") and waits for a code that never
comes. On an in-process runner that is the job's own process, so the job hangs. Before such a
job runs, ``require_credentials`` asks ``google.auth.default()`` once (no retries) and raises
``MissingCredentialsError`` instead.

Only runners that run the pipeline on this machine are checked (``LOCAL_RUNNERS``). Runners
that hand it to a service (Dataflow, a Flink cluster, a portable job service) are not: their
workers find their own credentials, such as the job's service account.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import google.auth
import google.auth.exceptions
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

LOCAL_RUNNERS = frozenset({"direct", "switchingdirect", "bundlebaseddirect", "fnapi",
                           "prism", "interactive"})
"""Runner names (lower case, ``Runner`` suffix dropped) whose workers run in this process or
on this machine."""


class MissingCredentialsError(RuntimeError):
    """A job would use BigQuery on this machine, and no Google credentials were found."""


def find_credentials() -> Any:
    """Application Default Credentials, looked up once: ``google.auth.default()``.

    Raises:
        google.auth.exceptions.DefaultCredentialsError: none are configured.
    """
    credentials, _ = google.auth.default()
    return credentials


def runner_name(options: PipelineOptions, pipeline: beam.Pipeline | None = None) -> str:
    """The runner's class name: ``pipeline``'s runner if given, else ``--runner``."""
    if pipeline is not None:
        return type(pipeline.runner).__name__
    return (options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1]


def runs_here(runner: str) -> bool:
    """Whether ``runner`` (a name as ``--runner`` takes it) runs the pipeline on this machine."""
    name = runner.rsplit(".", 1)[-1].lower()
    return name.removesuffix("runner") in LOCAL_RUNNERS


def bigquery_flags(args: argparse.Namespace) -> list[str]:
    """The BigQuery flags among a job's ``args`` that were given, e.g. ``["--input_table"]``."""
    return [f"--{name}" for name in ("input_table", "query", "output_table")
            if getattr(args, name, None)]


def require_credentials(job: str, flags: Sequence[str], options: PipelineOptions,
                        pipeline: beam.Pipeline | None = None) -> None:
    """Raises unless the BigQuery ``flags`` of ``job`` can get credentials on this machine.

    Args:
        job: The job's module, for the message (``pipelines.keyed``).
        flags: The BigQuery flags the job was given (``--input_table``, ...); none: no check.
        options: The job's pipeline options (``--runner``).
        pipeline: The pipeline the job runs on, when a test passes one in.

    Raises:
        MissingCredentialsError: no credentials were found and the runner runs here.

    Example:
        >>> require_credentials("pipelines.keyed", bigquery_flags(args), options)
    """
    if not flags:
        return
    runner = runner_name(options, pipeline)
    if not runs_here(runner):
        return
    try:
        find_credentials()
    except google.auth.exceptions.DefaultCredentialsError as e:
        uses = " and ".join(flags)
        raise MissingCredentialsError(
            f"{job}: {uses} need{'s' if len(flags) == 1 else ''} BigQuery, and no Google "
            f"credentials were found for the {runner} on this machine. google.auth.default() "
            f"said: {e} Sign in with `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or try the job "
            "against a local emulator with `python -m tests.emulators.bigquery` (README, "
            "\"BigQuery against a local emulator\"). The job stopped before running because, "
            "without credentials, Beam's BigQuery client opens an interactive browser sign-in "
            "and waits for it."
        ) from e
