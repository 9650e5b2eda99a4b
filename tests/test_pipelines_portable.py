"""Every job, unchanged, through PortableRunner: a local job service and an EXTERNAL pool
of SDK worker processes on loopback — the submission path Flink uses."""

from __future__ import annotations

import json
import re

from apache_beam.metrics.metric import MetricsFilter

import beam_infer as bi
from pipelines import basic, batch_scoring, branching, cascade, keyed, models, postprocess
from tests.support.portable import (
    REPO_ROOT,
    PortableServices,
    portable_pipeline_options,
    start_worker_pool,
    subprocess_env,
)


def _lines(path) -> list[str]:
    return sorted(path.read_text().splitlines())


def _committed(result, name: str) -> int:
    query = result.metrics().query(
        MetricsFilter().with_namespace(bi.METRICS_NAMESPACE).with_name(name))
    return sum(c.committed or 0 for c in query["counters"])


def test_keyed_job_on_the_portable_runner(portable_runner: PortableServices, tmp_path):
    assert portable_runner.sdk_worker_parallelism >= 2
    result = keyed.run([f"--work_dir={tmp_path}", *portable_runner.options()])
    assert _lines(tmp_path / "output") == sorted([
        "key is first_question input is [105.0] output is 525.0",
        "key is second_question input is [108.0] output is 540.0",
        "key is third_question input is [1000.0] output is 5000.0",
        "key is fourth_question input is [1013.0] output is 5065.0",
    ])
    # Scored in the SDK workers: their metrics came back through the job service.
    assert _committed(result, "num_inferences") == 4


def test_branching_job_on_the_portable_runner(portable_runner: PortableServices, tmp_path):
    result = branching.run([f"--work_dir={tmp_path}", *portable_runner.options()])
    questions = dict(models.read_questions())
    expected = sorted(
        f"model is {tag} key is {key} input is [{value}] output is {factor * value}"
        for key, value in questions.items() for tag, factor in (("x5", 5), ("x10", 10)))
    assert _lines(tmp_path / "output") == expected
    assert _committed(result, "num_inferences") == 8


def test_cascade_and_postprocess_jobs_on_the_portable_runner(
        portable_runner: PortableServices, tmp_path):
    cascade.run([f"--work_dir={tmp_path}/cascade", *portable_runner.options()])
    assert "key is fourth_question original input is 1013.0 input is [5065.0] output is " \
           "50650.0" in _lines(tmp_path / "cascade" / "output")
    postprocess.run([f"--work_dir={tmp_path}/post", "--format=csv",
                     f"--output={tmp_path}/post/rows", *portable_runner.options()])
    shards = [p.read_text().splitlines() for p in (tmp_path / "post").glob("rows*.csv")]
    assert all(lines[0] == "key,input,output,model_version" for lines in shards)
    assert sorted(line.split(",")[0] for lines in shards for line in lines[1:]) == sorted(
        key for key, _ in models.read_questions())


def test_basic_and_batch_scoring_jobs_on_the_portable_runner(
        portable_runner: PortableServices, tmp_path, capsys):
    basic.run([f"--work_dir={tmp_path}/basic", *portable_runner.options()])
    assert "input is [[1013.0]] output is [5065.0]" in _lines(tmp_path / "basic" / "output")

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "x": float(i)}) + "\n"
                              for i in range(50)))
    batch_scoring.run([f"--input={source}", "--key_column=id", f"--output={tmp_path}/out",
                       f"--work_dir={tmp_path}/scoring", *portable_runner.options()])
    assert re.search(r"read 50, scored 50, failed 0, elapsed", capsys.readouterr().out)
    rows = [json.loads(line) for p in tmp_path.glob("out*.jsonl")
            for line in p.read_text().splitlines()]
    assert sorted((r["key"], r["output"]["output_0"][0]) for r in rows) == sorted(
        (f"r{i}", 5.0 * i) for i in range(50))


def test_jobs_reach_workers_that_have_the_library_but_no_pipelines_package(
        portable_runner: PortableServices, tmp_path):
    # A worker as on Dataflow with --setup_file: beam_infer installed, the checkout absent.
    # Its "pipelines" refuses to import, so the job works only if its code came pickled.
    site = tmp_path / "worker_site"
    (site / "pipelines").mkdir(parents=True)
    (site / "beam_infer").symlink_to(REPO_ROOT / "beam_infer")
    (site / "pipelines" / "__init__.py").write_text(
        'raise ImportError("this worker has no pipelines package")\n')
    env = subprocess_env()
    env["PYTHONPATH"] = str(site)
    pool = start_worker_pool(tmp_path, env=env, cwd=site)
    try:
        options = portable_pipeline_options(portable_runner.job_endpoint, pool.address,
                                             sdk_worker_parallelism=1)
        result = keyed.run([f"--work_dir={tmp_path}/keyed", *options])
    finally:
        pool.stop()
    assert _lines(tmp_path / "keyed" / "output") == sorted(
        f"key is {key} input is [{value}] output is {5 * value}"
        for key, value in models.read_questions())
    assert _committed(result, "num_inferences") == 4
