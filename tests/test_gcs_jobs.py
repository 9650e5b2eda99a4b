"""Every job with its models, inputs and outputs on gs:// (gcp-storage-emulator).

The models are real SavedModels uploaded object by object, with no folder objects, as
``gcloud storage cp -r`` leaves them; the jobs run through their ``run()`` on the
DirectRunner and their outputs are read back from the bucket.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os

import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from pipelines import (
    basic,
    batch_scoring,
    branching,
    cascade,
    dead_letters,
    emulators,
    keyed,
    models,
    postprocess,
)
from tests.emulators.gcs import split
from tests.support.publishing import publish

pytestmark = pytest.mark.emulators

KEYED_ANSWERS = sorted([
    "key is first_question input is [105.0] output is 525.0",
    "key is second_question input is [108.0] output is 540.0",
    "key is third_question input is [1000.0] output is 5000.0",
    "key is fourth_question input is [1013.0] output is 5065.0",
])
QUESTIONS = [value for _, value in models.read_questions()]


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A bucket holding the demo models and inputs."""

    root: str  # gs://bucket
    five: str  # y = 5x, a version directory
    ten: str  # y = 10x
    versions: str  # base path: versions 1 (y = 5x) and 2 (y = 10x)
    questions_csv: str  # key,value: the jobs' questions
    features_csv: str  # id,x: a feature table for batch_scoring
    questions_tfrecord: str


@pytest.fixture(scope="module")
def bucket(gcs_emulator, tmp_path_factory) -> Bucket:
    local = tmp_path_factory.mktemp("gcs_jobs")
    root = f"gs://{gcs_emulator.new_bucket('jobs')}"
    os.makedirs(local / "versions")
    for version in (1, 2):
        publish(str(local / "versions"), version)
    upload = gcs_emulator.upload_tree
    questions = local / "questions"
    os.makedirs(questions)
    with open(models.QUESTIONS_CSV, "rb") as f:
        (questions / "questions.csv").write_bytes(f.read())
    models.write_examples(str(questions / "questions.tfrecord"), QUESTIONS)
    (questions / "features.csv").write_text(
        "id,x\n" + "".join(f"{k},{v}\n" for k, v in models.read_questions()))
    upload(str(questions), f"{root}/in")
    bucket = Bucket(
        root=root,
        five=upload(models.build_multiplier_model(str(local / "five"), 5.0),
                    f"{root}/models/five/1"),
        ten=upload(models.build_multiplier_model(str(local / "ten"), 10.0),
                   f"{root}/models/ten/1"),
        versions=upload(str(local / "versions"), f"{root}/models/versioned"),
        questions_csv=f"{root}/in/questions.csv",
        features_csv=f"{root}/in/features.csv",
        questions_tfrecord=f"{root}/in/questions.tfrecord")
    assert not any(name.endswith("/") for name in gcs_emulator.names(f"{root}/"))
    return bucket


def _lines(gcs, url: str) -> list[str]:
    return sorted(gcs.read_text(url).splitlines())


def _shards(gcs, prefix: str) -> list[str]:
    """The objects whose name starts with ``prefix`` (``gs://bucket/name-prefix``)."""
    bucket, name = split(prefix)
    return [f"gs://{bucket}/{n}" for n in gcs.names(prefix) if n.startswith(name)]


def _jsonl(gcs, prefix: str) -> list[dict]:
    return [json.loads(line) for url in _shards(gcs, prefix)
            for line in gcs.read_text(url).splitlines()]


@pytest.mark.parametrize("kind", ["version_dir", "base_path"])
def test_keyed_job_reads_and_writes_gcs(gcs, bucket, tmp_path, kind):
    model, factor = (bucket.five, 5) if kind == "version_dir" else (bucket.versions, 10)
    output = f"{bucket.root}/keyed/{kind}/answers.txt"
    keyed.run([f"--model_path={model}", f"--input={bucket.questions_csv}",
               f"--output={output}", f"--work_dir={tmp_path}"])
    assert _lines(gcs, output) == sorted(
        f"key is {key} input is [{value}] output is {factor * value}"
        for key, value in models.read_questions())
    assert not os.path.exists(tmp_path / "five_model")  # nothing built locally


def test_basic_job_reads_and_writes_gcs(gcs, bucket, tmp_path):
    output = f"{bucket.root}/basic/answers.txt"
    basic.run([f"--model_path={bucket.five}", f"--input={bucket.questions_tfrecord}",
               f"--output={output}", f"--work_dir={tmp_path}"])
    assert _lines(gcs, output) == sorted(
        f"input is [[{v}]] output is [{5 * v}]" for v in QUESTIONS)


@pytest.mark.parametrize("job", [branching, cascade], ids=["branching", "cascade"])
def test_two_model_jobs_read_and_write_gcs(gcs, bucket, tmp_path, job):
    name = job.__name__.rsplit(".", 1)[-1]
    output, rows = f"{bucket.root}/{name}/answers.txt", f"{bucket.root}/{name}/rows"
    job.run([f"--five_model={bucket.five}", f"--ten_model={bucket.ten}",
             f"--input={bucket.questions_csv}", f"--output={output}",
             f"--rows_output={rows}", f"--work_dir={tmp_path}"])
    lines = _lines(gcs, output)
    if job is branching:
        assert lines == sorted([f"model is x5 {a}" for a in KEYED_ANSWERS] + [
            f"model is x10 key is {k} input is [{v}] output is {10 * v}"
            for k, v in models.read_questions()])
        assert len(_jsonl(gcs, rows)) == 8
    else:
        assert lines == sorted(
            f"key is {k} original input is {v} input is [{5 * v}] output is {50 * v}"
            for k, v in models.read_questions())
        assert sorted(r["original_input"] for r in _jsonl(gcs, rows)) == sorted(QUESTIONS)


def test_postprocess_job_reads_and_writes_gcs(gcs, bucket, tmp_path):
    rows = f"{bucket.root}/postprocess/rows"
    postprocess.run([f"--model_path={bucket.versions}", "--format=csv", f"--output={rows}",
                     f"--work_dir={tmp_path}"])
    lines = [line for url in _shards(gcs, rows) for line in gcs.read_text(url).splitlines()]
    assert lines.count(",".join(postprocess.CSV_COLUMNS)) == len(_shards(gcs, rows))
    answers = sorted(line for line in lines if line.startswith("first_question"))
    assert answers == ['first_question,"{""x"": [105.0]}","{""output_0"": [1050.0]}",2']


@pytest.mark.parametrize("output_format", ["jsonl", "parquet", "tfrecord"])
def test_batch_scoring_job_reads_and_writes_gcs(gcs, bucket, tmp_path, output_format,
                                                capsys):
    output = f"{bucket.root}/batch_scoring/{output_format}/scores"
    batch_scoring.run([f"--model_path={bucket.versions}", f"--input={bucket.features_csv}",
                       "--key_column=id", f"--output={output}",
                       f"--output_format={output_format}",
                       f"--failed_output={bucket.root}/batch_scoring/{output_format}/failed",
                       f"--work_dir={tmp_path}"])
    assert "read 4, scored 4, failed 0" in capsys.readouterr().out
    client = gcs.client()
    blobs = [client.bucket(split(url)[0]).blob(split(url)[1]).download_as_bytes()
             for url in _shards(gcs, output)]
    if output_format == "jsonl":
        outputs = [json.loads(line)["output"]["output_0"][0] for blob in blobs
                   for line in blob.decode().splitlines()]
    elif output_format == "parquet":
        outputs = [json.loads(text)["output_0"][0] for blob in blobs
                   for text in pq.read_table(io.BytesIO(blob)).column("output").to_pylist()]
    else:
        local = tmp_path / "logs.tfrecord"
        local.write_bytes(b"".join(blobs))
        outputs = [prediction_log_pb2.PredictionLog.FromString(record.numpy())
                   .predict_log.response.outputs["output_0"].float_val[0]
                   for record in tf.data.TFRecordDataset(str(local))]
    assert sorted(outputs) == sorted(10 * v for v in QUESTIONS)


def test_dead_letters_job_reads_and_writes_gcs(gcs, bucket, tmp_path):
    mixed = tmp_path / "mixed.tfrecord"
    with tf.io.TFRecordWriter(str(mixed)) as writer:
        for value, bad in zip(dead_letters.GOOD_VALUES, dead_letters.bad_records(),
                              strict=True):
            writer.write(models.make_example(value).SerializeToString())
            writer.write(bad)
    gcs.client().bucket(split(bucket.root)[0]).blob("dead_letters/mixed.tfrecord") \
        .upload_from_filename(str(mixed))
    output = f"{bucket.root}/dead_letters/output"
    dead_letters.run([f"--model_path={bucket.five}",
                      f"--input={bucket.root}/dead_letters/mixed.tfrecord",
                      f"--output={output}", f"--work_dir={tmp_path}"])
    assert _lines(gcs, output + ".predictions") == sorted(
        f"input is [[{v}]] output is [{5 * v}]" for v in dead_letters.GOOD_VALUES)
    letters = [json.loads(line) for line in _lines(gcs, output + ".dead_letters")]
    assert sorted(base64.b64decode(d["record_base64"]) for d in letters) == sorted(
        dead_letters.bad_records())


def test_emulator_copy_command_uploads_a_model_the_jobs_can_serve(gcs, tmp_path, capsys):
    source = models.build_multiplier_model(str(tmp_path / "five"), 5.0)
    target = f"gs://{gcs.new_bucket('copy')}/models/five/1"
    assert emulators.main(["copy", source, target]) == 0
    names = gcs.names(target)
    assert f"{split(target)[1]}/saved_model.pb" in names
    assert not any(name.endswith("/") for name in names)
    output = target.rsplit("/models/", 1)[0] + "/answers.txt"
    keyed.run([f"--model_path={target}", f"--output={output}", f"--work_dir={tmp_path}"])
    assert _lines(gcs, output) == KEYED_ANSWERS
