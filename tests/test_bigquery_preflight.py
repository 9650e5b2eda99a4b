"""Jobs given BigQuery flags fail within seconds when there are no credentials, never hang.

Without this check Beam's BigQuery client falls into an interactive browser sign-in and waits
(see ``pipelines/bigquery_preflight.py``). HOME points at an empty directory here, so
``google.auth.default()`` finds no Application Default Credentials. On a GCE machine the metadata
server would still answer, and these tests would fail for that reason.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import bigquery_preflight, branching, cascade, keyed, postprocess

REPO = pathlib.Path(__file__).resolve().parents[1]
TABLES = ["--input_table=my-project:maths.questions", "--output_table=my-project:maths.answers",
          "--project=my-project", "--temp_location=gs://bucket/tmp"]
CREDENTIAL_VARIABLES = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG",
                        "GOOGLE_CLOUD_PROJECT", "STORAGE_EMULATOR_HOST")


def _message(job: str, flags: str, cause: BaseException) -> str:
    return (
        f"{job}: {flags} BigQuery, and no Google credentials were found for the DirectRunner "
        f"on this machine. google.auth.default() said: {cause} Sign in with "
        "`gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
        "service-account key file, or try the job against a local emulator with "
        "`python -m tests.emulators.bigquery` (README, \"BigQuery against a local emulator\"). "
        "The job stopped before running because, without credentials, Beam's BigQuery client "
        "opens an interactive browser sign-in and waits for it.")


@pytest.fixture
def no_credentials(monkeypatch, tmp_path) -> pathlib.Path:
    home = tmp_path / "empty_home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return home


def test_keyed_without_credentials_stops_within_seconds_with_a_message(tmp_path):
    # The command a user runs, in a fresh process: it must end, not wait for a browser.
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}
    home = tmp_path / "empty_home"
    home.mkdir()
    env.update(HOME=str(home), PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.keyed", *TABLES, f"--work_dir={tmp_path}/work"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-3000:]
    (last_line,) = done.stderr.strip().splitlines()  # one error line, no traceback
    assert last_line.startswith(
        "pipelines.keyed: error: MissingCredentialsError: pipelines.keyed: --input_table "
        "and --output_table need BigQuery, and no Google credentials were found"), last_line
    assert "accounts.google.com" not in done.stdout + done.stderr
    assert not (tmp_path / "work").exists()  # stopped before building anything
    assert elapsed < 60, f"took {elapsed:.1f} s (imports included)"


@pytest.mark.parametrize(("job", "argv", "flags"), [
    (keyed, TABLES, "--input_table and --output_table need"),
    (keyed, ["--query=SELECT key, value FROM maths.questions", "--project=my-project"],
     "--query needs"),
    (branching, TABLES[:1], "--input_table needs"),
    (cascade, TABLES[:1], "--input_table needs"),
    (postprocess, ["--output_table=my-project:maths.rows"], "--output_table needs"),
])
def test_each_job_refuses_bigquery_flags_without_credentials(no_credentials, tmp_path, job,
                                                             argv, flags):
    started = time.monotonic()
    with pytest.raises(bigquery_preflight.MissingCredentialsError) as error:
        job.run([*argv, f"--work_dir={tmp_path}/work"])
    assert time.monotonic() - started < 10
    assert str(error.value) == _message(job.__name__, flags, error.value.__cause__)
    assert not (tmp_path / "work").exists()


def test_application_default_credentials_pass_the_check(no_credentials, tmp_path, monkeypatch):
    # An authorized-user ADC file, as `gcloud auth application-default login` writes one;
    # google.auth only parses it here, nothing is refreshed.
    key = tmp_path / "adc.json"
    key.write_text(json.dumps({"type": "authorized_user", "client_id": "id",
                               "client_secret": "secret", "refresh_token": "token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    bigquery_preflight.require_credentials("pipelines.keyed", ["--input_table"],
                                           PipelineOptions([]))


@pytest.mark.parametrize("runner", ["DataflowRunner", "PortableRunner", "FlinkRunner"])
def test_runners_whose_workers_run_elsewhere_are_not_checked(no_credentials, runner):
    bigquery_preflight.require_credentials(
        "pipelines.keyed", ["--input_table"], PipelineOptions([f"--runner={runner}"]))


def test_jobs_without_bigquery_flags_are_not_checked(no_credentials):
    bigquery_preflight.require_credentials("pipelines.keyed", [], PipelineOptions([]))


@pytest.mark.parametrize(("runner", "here"), [
    ("DirectRunner", True), ("direct", True), ("FnApiRunner", True),
    ("apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner", True),
    ("SwitchingDirectRunner", True), ("DataflowRunner", False), ("PortableRunner", False),
    ("FlinkRunner", False), ("SparkRunner", False),
])
def test_runs_here_names_the_in_process_runners(runner, here):
    assert bigquery_preflight.runs_here(runner) is here
