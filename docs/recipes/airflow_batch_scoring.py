"""Airflow DAG: every night, score the day's partition with pipelines.batch_scoring on Dataflow.

Copy into your DAGs folder and change the ``SETTINGS``. The task runs
``python -m pipelines.batch_scoring`` (apache-airflow-providers-apache-beam's
``BeamRunPythonPipelineOperator``) in an environment where beam-infer is installed; the
job waits for its Dataflow job, commits the outputs and exits with the run's code, which
fails the task unless it is 0 (1 error, 2 usage, 3 too many failures, 4 nothing scored).
``{{ ds }}`` is the run's logical date, so a cleared or backfilled task rescores its own
date and replaces that partition. See docs/batch_scoring.md.
"""

from __future__ import annotations

import pendulum
from airflow import DAG
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

SETTINGS = {
    "project": "my-project",
    "region": "us-central1",
    "bucket": "gs://my-bucket",
    "worker_image": "us-central1-docker.pkg.dev/my-project/images/beam-infer-gpu:0.1.0",
}
BUCKET = SETTINGS["bucket"]

with DAG(
    dag_id="beam_infer_batch_scoring",
    schedule="15 3 * * *",
    start_date=pendulum.datetime(2024, 5, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two runs of one date would replace each other's outputs
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=20)},
) as dag:
    score = BeamRunPythonPipelineOperator(
        task_id="score",
        py_file="pipelines.batch_scoring",
        py_options=["-m"],
        py_interpreter="python3",
        py_system_site_packages=True,  # beam-infer installed in the worker's environment
        runner="DataflowRunner",
        pipeline_options={
            "input": f"{BUCKET}/events/dt={{run_date}}/*.parquet",
            "model_path": f"{BUCKET}/models/churn",
            "key_column": "customer_id",
            "output": f"{BUCKET}/scores/dt={{run_date}}/part",
            "output_format": "parquet",
            "failed_output": f"{BUCKET}/failed/dt={{run_date}}/part",
            "max_failure_rate": "0.001",
            "run_date": "{{ ds }}",
            "progress_secs": "300",
            "project": SETTINGS["project"],
            "region": SETTINGS["region"],
            "temp_location": f"{BUCKET}/tmp",
            "sdk_container_image": SETTINGS["worker_image"],
            "experiments": "use_runner_v2",
        },
    )
