"""pipelines.batch_scoring as a scheduler sees it: exit codes, failure thresholds, reruns
that replace, runs that fail or are killed half-way, the manifest and progress lines."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import beam_infer as bi
from pipelines import batch_scoring, progress, run_report

REPO = pathlib.Path(__file__).resolve().parents[1]
QUIET = ["--progress_secs=0"]
DATE = "2024-05-01"


def _jsonl_rows(paths) -> list[dict]:
    return [json.loads(line) for path in paths for line in pathlib.Path(path).read_text()
            .splitlines()]


def _partition(root: pathlib.Path, date: str = DATE) -> pathlib.Path:
    return root / "scores" / f"dt={date}"


def _write_values(path: pathlib.Path, values) -> pathlib.Path:
    path.write_text("".join(json.dumps({"id": f"r{i}", "x": v}) + "\n"
                            for i, v in enumerate(values)))
    return path


def _score(tmp_path, source, model, *extra: str, date: str = DATE) -> int:
    return batch_scoring.main([
        f"--input={source}", f"--model_path={model}", "--key_column=id",
        f"--output={tmp_path}/scores/dt={{run_date}}/part", f"--run_date={date}",
        f"--work_dir={tmp_path}", *QUIET, *extra])


def _manifest(partition: pathlib.Path, name: str = "_part.manifest.json") -> dict:
    return json.loads((partition / name).read_text())


def test_a_rerun_of_a_date_leaves_exactly_one_copy_of_each_row(tmp_path, zoo):
    source = _write_values(tmp_path / "in.jsonl", [float(i) for i in range(10)])
    assert _score(tmp_path, source, zoo.five, "--num_shards=3") == 0
    partition = _partition(tmp_path)
    assert len(list(partition.glob("part-*.jsonl"))) == 3
    first = _manifest(partition)
    # The second run writes one shard: the three of the first run must all go.
    assert _score(tmp_path, source, zoo.ten, "--num_shards=1") == 0
    shards = sorted(partition.glob("part-*.jsonl"))
    assert [p.name for p in shards] == ["part-00000-of-00001.jsonl"]
    rows = _jsonl_rows(shards)
    assert sorted(r["key"] for r in rows) == sorted(f"r{i}" for i in range(10))
    assert {r["key"]: r["output"]["output_0"][0] for r in rows} == {
        f"r{i}": 10.0 * i for i in range(10)}
    manifest = _manifest(partition)
    assert manifest["run_id"] != first["run_id"]
    assert manifest["counts"]["written"] == manifest["counts"]["scored"] == len(rows) == 10
    assert manifest["outputs"]["predictions"]["files"] == [str(shards[0])]
    assert sorted(p.name for p in partition.iterdir()) == [
        "_part.manifest.json", "part-00000-of-00001.jsonl"]  # no staging left behind


def test_each_run_date_is_its_own_partition(tmp_path, zoo):
    source = _write_values(tmp_path / "in.jsonl", [1.0, 2.0])
    assert _score(tmp_path, source, zoo.five, date="2024-05-01") == 0
    assert _score(tmp_path, source, zoo.five, date="2024-05-02") == 0
    for date in ("2024-05-01", "2024-05-02"):
        partition = _partition(tmp_path, date)
        assert len(_jsonl_rows(partition.glob("part-*.jsonl"))) == 2
        assert _manifest(partition)["run_date"] == date


def test_manifest_counts_equal_the_rows_written_in_every_format(tmp_path, zoo):
    table = pa.table({"id": [f"k{i}" for i in range(7)], "x": [float(i) for i in range(7)]})
    pq.write_table(table, tmp_path / "in.parquet")
    for fmt in ("jsonl", "parquet", "tfrecord"):
        output = tmp_path / fmt
        extra = [] if fmt == "tfrecord" else ["--key_column=id"]
        assert batch_scoring.main([
            f"--input={tmp_path}/in.parquet", f"--model_path={zoo.five}", *extra,
            f"--output={output}/part", f"--output_format={fmt}", f"--work_dir={tmp_path}",
            "--num_shards=2", *QUIET]) == 0
        manifest = _manifest(output)
        files = manifest["outputs"]["predictions"]["files"]
        if fmt == "jsonl":
            written = len(_jsonl_rows(files))
        elif fmt == "parquet":
            written = sum(pq.read_table(f).num_rows for f in files)
        else:
            written = sum(1 for f in files for _ in tf.data.TFRecordDataset(f))
        assert len(files) == 2
        assert manifest["counts"] == {"read": 7, "scored": 7, "failed": 0, "written": written,
                                      "failed_by_stage": dict.fromkeys(run_report.STAGES, 0)}
        assert written == 7
        assert manifest["input"] == {"pattern": f"{tmp_path}/in.parquet", "format": "parquet",
                                     "files": 1, "count": 7}


def test_manifest_records_the_model_signature_versions_and_times(tmp_path, zoo):
    source = _write_values(tmp_path / "in.jsonl", [[1.0], [2.0]])
    assert _score(tmp_path, source, zoo.keras3_dense, "--model_version=3") == 0
    manifest = _manifest(_partition(tmp_path))
    assert manifest["status"] == "succeeded" and manifest["exit_code"] == 0
    assert manifest["model"] == {
        "path": zoo.keras3_dense, "served_path": zoo.keras3_dense, "name": "keras3_dense",
        "version": "3", "fingerprint": run_report.fingerprint(zoo.keras3_dense),
        "tags": ["serve"]}
    assert manifest["model"]["fingerprint"].startswith("sha256:")
    assert manifest["signature"]["names"] == ["serving_default"]
    assert manifest["signature"]["inputs"] == ["x: float32[?,1]"]
    assert manifest["columns"] == {"feed": "tensors", "inputs": [
        {"alias": "x", "column": "x", "expects": "x: float32[?,1]"}]}
    assert manifest["versions"]["beam_infer"] == bi.__version__ == "0.2.0"
    assert manifest["start"] <= manifest["end"] and manifest["elements_per_sec"] > 0
    assert {r["model_version"] for r in
            _jsonl_rows(_partition(tmp_path).glob("part-*.jsonl"))} == {"3"}


def test_the_fingerprint_follows_the_export_not_its_path(tmp_path):
    import shutil

    from pipelines import models

    five = models.build_multiplier_model(str(tmp_path / "a"), 5.0)
    copy = shutil.copytree(five, tmp_path / "copied")
    ten = models.build_multiplier_model(str(tmp_path / "c"), 10.0)
    assert run_report.fingerprint(five) == run_report.fingerprint(str(copy))
    assert run_report.fingerprint(five) != run_report.fingerprint(ten)
    (copy / "variables" / "variables.index").write_bytes(b"changed")
    assert run_report.fingerprint(five) != run_report.fingerprint(str(copy))


def test_input_where_every_row_fails_exits_non_zero_and_commits_nothing(tmp_path, zoo,
                                                                       capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "x": "one"}\n{"id": "b", "x": "two"}\n')
    assert _score(tmp_path, source, zoo.keras3_dense) == run_report.EXIT_TOO_MANY_FAILURES
    captured = capsys.readouterr()
    assert "read 2, scored 0, failed 2" in captured.out
    assert captured.err == (
        "python -m pipelines.batch_scoring: failed (too many failures): 2 of 2 rows failed "
        "(100.00%; by stage: convert 2), more than --max_failure_rate=0 allows. The "
        "predictions were not committed. Without --failed_output any failure fails the run; "
        "pass --failed_output=PATH to keep the failed rows with their reasons, and "
        "--max_failure_rate to tolerate a share of them.\n")
    partition = _partition(tmp_path)
    assert sorted(p.name for p in partition.iterdir()) == ["_part.manifest.failed.json"]
    failed = _manifest(partition, "_part.manifest.failed.json")
    assert (failed["status"], failed["exit_code"]) == ("failed", 3)
    assert failed["counts"]["failed_by_stage"]["convert"] == 2
    assert failed["counts"]["written"] == 0
    # Allowing every failure still never exits 0 when nothing was scored.
    assert _score(tmp_path, source, zoo.keras3_dense, "--max_failure_rate=1") == \
        run_report.EXIT_NOTHING_SCORED


def test_failure_threshold_defaults_to_none_without_failed_output_and_one_percent_with_it(
        tmp_path, fault_zoo):
    from pipelines import models

    values = [float(i) for i in range(99)] + [2000.0]  # 1 of 100 the model refuses
    source = tmp_path / "in.tfrecord"
    models.write_examples(str(source), values)
    base = [f"--input={source}", f"--model_path={fault_zoo.poison}", f"--work_dir={tmp_path}",
            "--max_batch_size=50", *QUIET]
    assert batch_scoring.main([*base, f"--output={tmp_path}/strict/part"]) == 3
    assert not list((tmp_path / "strict").glob("part-*"))
    assert batch_scoring.main([*base, f"--output={tmp_path}/ok/part",
                               f"--failed_output={tmp_path}/ok/failed"]) == 0
    manifest = _manifest(tmp_path / "ok")
    assert manifest["max_failure_rate"] == batch_scoring.DEFAULT_MAX_FAILURE_RATE == 0.01
    assert manifest["counts"]["failed_by_stage"]["inference"] == 1
    (failure,) = _jsonl_rows(manifest["outputs"]["failed"]["files"])
    assert failure["stage"] == "inference" and "x must be below 1000" in failure["error"]
    assert batch_scoring.main([*base, f"--output={tmp_path}/tight/part",
                               f"--failed_output={tmp_path}/tight/failed",
                               "--max_failure_rate=0.005"]) == 3
    # Too many failures: the failures are committed (they say why), the predictions not.
    assert len(_jsonl_rows((tmp_path / "tight").glob("failed-*.jsonl"))) == 1
    assert not list((tmp_path / "tight").glob("part-*"))


def test_a_failed_rerun_leaves_the_committed_partition_as_it_was(tmp_path, zoo):
    good = _write_values(tmp_path / "good.jsonl", [[1.0], [2.0], [3.0]])
    assert _score(tmp_path, good, zoo.keras3_dense) == 0
    partition = _partition(tmp_path)
    before = {p.name: p.read_bytes() for p in partition.iterdir()}
    bad = _write_values(tmp_path / "bad.jsonl", [[1.0], "oops", [3.0]])
    assert _score(tmp_path, bad, zoo.keras3_dense) == 3
    after = {p.name: p.read_bytes() for p in partition.iterdir()
             if p.name != "_part.manifest.failed.json"}
    assert after == before
    # The next good run replaces it and clears the failed run's note.
    assert _score(tmp_path, good, zoo.keras3_dense) == 0
    assert not (partition / "_part.manifest.failed.json").exists()


def test_empty_or_missing_input_exits_nothing_scored(tmp_path, zoo, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    assert _score(tmp_path, tmp_path / "empty.jsonl", zoo.five) == 4
    assert "read no rows from --input=" in capsys.readouterr().err
    partition = _partition(tmp_path)
    assert [p.name for p in partition.iterdir()] == ["_part.manifest.failed.json"]
    assert _manifest(partition, "_part.manifest.failed.json")["exit_code"] == 4
    (partition / "_part.manifest.failed.json").unlink()
    missing = f"{tmp_path}/in/dt={{run_date}}/*.jsonl"
    assert _score(tmp_path, missing, zoo.five) == 4
    assert capsys.readouterr().err == (
        f"python -m pipelines.batch_scoring: failed (nothing scored): no file matches "
        f"--input={tmp_path}/in/dt={DATE}/*.jsonl (run date {DATE}): nothing to score, so "
        "nothing was committed. Check that the input for this date has landed.\n")
    assert not list(partition.iterdir())  # no file matched: nothing ran, nothing written


@pytest.mark.parametrize(("flags", "message"), [
    (["--max_failure_rate=2"], "--max_failure_rate is a share of the rows read, from 0 to 1; "
                               "got 2. Example: --max_failure_rate=0.01 (1%)."),
    (["--run_date=01/05/2024"], "--run_date must be a date as YYYY-MM-DD; got '01/05/2024'. "
                                "Example: --run_date=2024-05-01 (Airflow: --run_date={{ ds }})."),
    (["--input_map=nope=x"], "--input_map names input 'nope', which signature "),
])
def test_configuration_mistakes_exit_2_before_anything_runs(tmp_path, zoo, capsys, flags,
                                                            message):
    source = _write_values(tmp_path / "in.jsonl", [[1.0]])
    argv = [f"--input={source}", f"--model_path={zoo.keras3_dense}",
            f"--output={tmp_path}/out/part", f"--work_dir={tmp_path}", *QUIET, *flags]
    assert batch_scoring.main(argv) == run_report.EXIT_USAGE
    assert capsys.readouterr().err.startswith(
        "python -m pipelines.batch_scoring: error: " + message)
    assert not (tmp_path / "out").exists()


def test_unknown_flags_of_the_job_are_usage_errors(capsys):
    assert batch_scoring.main(["--max_failure_rate=lots"]) == 2
    assert "argument --max_failure_rate: invalid float value: 'lots'" in capsys.readouterr().err


def test_progress_lines_give_the_count_rate_and_time_left():
    assert progress.format_line(250, 2.0, 1000) == (
        "progress: 250 of 1,000 elements (25.0%), 125.0 elements/s, about 6 s left")
    assert progress.format_line(1200, 4.0, None) == (
        "progress: 1,200 elements, 300.0 elements/s (input size unknown)")
    assert progress.format_line(0, 0.0, 10) == "progress: 0 of 10 elements (0.0%), 0.0 elements/s"
    assert progress.format_line(3_000, 1.0, 3_600_000).endswith("about 19 min 59 s left")
    lines = []
    clock = iter(range(100)).__next__
    with progress.Progress("run-1", every_secs=0.01, expected=4, write=lines.append,
                           clock=lambda: float(clock())) as live:
        progress.count_done("run-1", 2)
        deadline = time.monotonic() + 5
        while not any("2 of 4" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert live.done() == 2
    assert any(line.startswith("progress: 2 of 4 elements (50.0%)") for line in lines)
    assert progress.done_here("run-1") == 0  # forgotten when the run ends


def _sleepy_model(path: pathlib.Path, *, factor: float, sleep_secs: float) -> str:
    """y = factor * x from Examples; every call sleeps ``sleep_secs`` in the graph."""
    from tensorflow.python.data.experimental.ops import testing as data_testing

    module = tf.Module()
    module.w = tf.Variable(factor)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(examples):
        x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        sleep = data_testing.sleep(tf.constant(int(sleep_secs * 1e6), tf.int64))
        slept = tf.data.Dataset.range(1).apply(sleep).reduce(tf.constant(0, tf.int64),
                                                             lambda a, b: a + b)
        return {"output_0": module.w * x + tf.cast(slept, tf.float32) * 0.0}

    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return str(path)


def test_a_run_killed_half_way_leaves_no_partial_partition(tmp_path, zoo):
    ids = [f"k{i}" for i in range(8)]
    pq.write_table(pa.table({"id": ids, "x": [float(i) for i in range(8)]}),
                   tmp_path / "in.parquet")
    argv = [f"--input={tmp_path}/in.parquet", "--key_column=id", f"--run_date={DATE}",
            f"--output={tmp_path}/scores/dt={{run_date}}/part", f"--work_dir={tmp_path}"]
    assert batch_scoring.main([*argv, f"--model_path={zoo.five}", *QUIET]) == 0
    partition = _partition(tmp_path)
    committed = {p.name: p.read_bytes() for p in partition.iterdir()}

    slow = _sleepy_model(tmp_path / "slow", factor=7.0, sleep_secs=0.5)
    log = tmp_path / "rerun.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with log.open("w") as out:
        rerun = subprocess.Popen(
            [sys.executable, "-m", "pipelines.batch_scoring", *argv, f"--model_path={slow}",
             "--max_batch_size=1", "--progress_secs=0.2"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and rerun.poll() is None:
            done = [line for line in log.read_text().splitlines()
                    if line.startswith("progress: ") and not line.startswith("progress: 0 ")]
            if done:
                break
            time.sleep(0.1)
        assert rerun.poll() is None, f"the rerun ended before it could be killed:\n" \
                                     f"{log.read_text()[-3000:]}"
        assert done, f"no progress within 120 s:\n{log.read_text()[-3000:]}"
        assert done[0].startswith("progress: ") and " of 8 elements (" in done[0]
        rerun.send_signal(signal.SIGKILL)
    finally:
        if rerun.poll() is None:
            rerun.kill()
        rerun.wait(timeout=30)
    assert rerun.returncode == -signal.SIGKILL
    # Readers of the partition see the committed run, whole; the rerun's rows stayed aside.
    visible = {p.name: p.read_bytes() for p in partition.iterdir()
               if not p.name.startswith("_staging-")}
    assert visible == committed
    assert [p.name.startswith("_staging-part-") for p in partition.iterdir()
            if p.name not in committed] == [True]
    rows = _jsonl_rows(partition.glob("part-*.jsonl"))
    assert sorted((r["key"], r["output"]["output_0"][0]) for r in rows) == [
        (f"k{i}", 5.0 * i) for i in range(8)]
    # Rerun to the end: one copy of each row, from the new run.
    assert batch_scoring.main([*argv, f"--model_path={zoo.ten}", *QUIET]) == 0
    rows = _jsonl_rows(partition.glob("part-*.jsonl"))
    assert sorted((r["key"], r["output"]["output_0"][0]) for r in rows) == [
        (f"k{i}", 10.0 * i) for i in range(8)]
    assert _manifest(partition)["counts"]["written"] == 8


def test_beam_infer_score_and_the_module_return_the_exit_code_as_processes(tmp_path, zoo):
    source = tmp_path / "in.jsonl"
    source.write_text('{"x": "bad"}\n')
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    scored = subprocess.run(
        [sys.executable, "-m", "beam_infer", "score", f"--input={source}",
         f"--model_path={zoo.keras3_dense}", "--output=out/part", "--progress_secs=0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert scored.returncode == 3, scored.stderr[-3000:]
    assert "beam-infer score: failed (too many failures): 1 of 1 rows failed" in scored.stderr
    assert not list((tmp_path / "out").glob("part-*"))


def test_the_pipelines_last_step_can_commit_for_launchers_that_do_not_wait(tmp_path, zoo,
                                                                          capsys):
    source = _write_values(tmp_path / "in.jsonl", [[1.0], [2.0], [3.0]])
    in_pipeline = ["--commit=in_pipeline", f"--failed_output={tmp_path}/failed/dt={{run_date}}/f"]
    assert _score(tmp_path, source, zoo.keras3_dense, *in_pipeline, "--num_shards=2") == 0
    assert _score(tmp_path, source, zoo.keras3_dense, *in_pipeline) == 0  # a rerun replaces
    partition = _partition(tmp_path)
    rows = _jsonl_rows(partition.glob("part-*.jsonl"))
    assert sorted(r["output"]["output_0"][0] for r in rows) == [5.0, 10.0, 15.0]
    manifest = _manifest(partition)
    assert manifest["counts"] == {"read": 3, "scored": 3, "failed": 0, "written": 3,
                                  "failed_by_stage": dict.fromkeys(run_report.STAGES, 0)}
    assert "committed by the pipeline's last step" in capsys.readouterr().out
    assert not [p for p in partition.iterdir() if p.name.startswith("_staging")]

    bad = _write_values(tmp_path / "bad.jsonl", [[1.0], "oops", [3.0]])
    before = {p.name: p.read_bytes() for p in partition.iterdir()}
    assert _score(tmp_path, bad, zoo.keras3_dense, *in_pipeline) == 3
    err = capsys.readouterr().err
    assert "failed (too many failures): 1 of 3 rows failed (33.33%; by stage: convert 1)" in err
    assert {p.name: p.read_bytes() for p in partition.iterdir()
            if p.name != "_part.manifest.failed.json"} == before
    (failure,) = _jsonl_rows((tmp_path / "failed" / f"dt={DATE}").glob("f-*.jsonl"))
    assert failure["stage"] == "convert" and failure["element"].endswith('"x": "oops"}')


@pytest.mark.emulators
def test_reruns_replace_on_gcs_too(gcs, tmp_path, zoo):
    source = _write_values(tmp_path / "in.jsonl", [1.0, 2.0, 3.0])
    root = f"gs://{gcs.new_bucket('scores')}"
    argv = [f"--input={source}", "--key_column=id", f"--run_date={DATE}",
            f"--output={root}/scores/dt={{run_date}}/part", f"--work_dir={tmp_path}", *QUIET]
    assert batch_scoring.main([*argv, f"--model_path={zoo.five}", "--num_shards=3"]) == 0
    assert batch_scoring.main([*argv, f"--model_path={zoo.ten}", "--num_shards=1"]) == 0
    prefix = f"{root}/scores/dt={DATE}"
    bucket_path = prefix.removeprefix("gs://").split("/", 1)[1]
    assert gcs.names(prefix) == [f"{bucket_path}/_part.manifest.json",
                                 f"{bucket_path}/part-00000-of-00001.jsonl"]
    rows = [json.loads(line) for line in
            gcs.read_text(f"{prefix}/part-00000-of-00001.jsonl").splitlines()]
    assert sorted((r["key"], r["output"]["output_0"][0]) for r in rows) == [
        ("r0", 10.0), ("r1", 20.0), ("r2", 30.0)]
    manifest = json.loads(gcs.read_text(f"{prefix}/_part.manifest.json"))
    assert manifest["counts"]["written"] == 3
    assert manifest["outputs"]["predictions"]["files"] == [f"{prefix}/part-00000-of-00001.jsonl"]
