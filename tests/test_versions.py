"""Versioned base paths: completeness, policies, build-time choice, model_spec in logs."""

from __future__ import annotations

import os
import shutil

import apache_beam as beam
import pytest

import beam_infer as bi
from beam_infer.saved_model import _versions
from pipelines import models
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect
from tests.support.remote_fs import remote


def _versioned(tmp_path, versions=(1, 2)) -> str:
    """Version v computes y = 5v * x."""
    return model_zoo.versioned(tmp_path / "five", models.build_multiplier_model,
                               versions=versions, factor=5.0)


def _score(spec: bi.ModelSpec, tmp_path, values=(1.0, 2.0)):
    outputs, _ = run_collect(
        lambda p: {"logs": p | beam.Create(model_zoo.make_examples(values))
                   | bi.RunInference(spec)},
        str(tmp_path / "out"))
    return sorted(outputs["logs"], key=lambda log: log.predict_log.response.outputs[
        "output_0"].float_val[0])


def _complete(sizes: dict[str, int]) -> bool:
    return _versions.is_complete({name: (size, 0.0) for name, size in sizes.items()})


def test_completeness_rule_on_listings():
    full = {"saved_model.pb": 10, "variables/variables.index": 5,
            "variables/variables.data-00000-of-00002": 7,
            "variables/variables.data-00001-of-00002": 7}
    assert _complete(full)
    assert _complete({"saved_model.pb": 10})  # a model without variables
    assert not _complete({**full, "saved_model.pb": 0})  # still being written
    assert not _complete({k: v for k, v in full.items() if k != "variables/variables.index"})
    assert not _complete({k: v for k, v in full.items() if not k.endswith("00001-of-00002")})
    assert not _complete({k: v for k, v in full.items() if k != "saved_model.pb"})


def test_batch_job_serves_the_newest_complete_version_and_logs_it(tmp_path):
    base = _versioned(tmp_path)
    logs = _score(bi.ModelSpec(model_path=base), tmp_path)
    assert [log.predict_log.response.outputs["output_0"].float_val[0] for log in logs] == \
        [10.0, 20.0]
    for log in logs:
        for message in (log.predict_log.request, log.predict_log.response):
            assert message.model_spec.name == "five"
            assert message.model_spec.version.value == 2
            assert message.model_spec.signature_name == "serving_default"


def test_half_written_version_is_ignored_at_build(tmp_path):
    base = _versioned(tmp_path)
    shutil.copytree(os.path.join(base, "2"), os.path.join(base, "3"))
    os.remove(os.path.join(base, "3", "variables", "variables.index"))
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=base))
    assert handler.model_version.version == 2


def test_specific_policy_and_model_name(tmp_path):
    base = _versioned(tmp_path, versions=(1, 2, 3))
    spec = bi.ModelSpec(model_path=base, model_name="multiplier",
                        version_policy=bi.VersionPolicy.specific(1, 2))
    logs = _score(spec, tmp_path, values=(1.0,))
    assert logs[0].predict_log.response.outputs["output_0"].float_val[0] == 10.0
    assert logs[0].predict_log.response.model_spec.name == "multiplier"
    assert logs[0].predict_log.response.model_spec.version.value == 2


def test_policies_choose_like_tf_serving():
    assert bi.VersionPolicy.latest().allowed([1, 3, 2]) == [3]
    assert bi.VersionPolicy.latest(2).allowed([1, 3, 2]) == [3, 2]
    assert bi.VersionPolicy.all().allowed([1, 3, 2]) == [3, 2, 1]
    assert bi.VersionPolicy.specific(1, 7).allowed([1, 3, 2]) == [1]


def test_versioned_path_on_a_remote_filesystem(tmp_path):
    base = _versioned(tmp_path)
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=remote(base)))
    assert handler.model_version == _versions.ModelVersion(
        path=remote(base) + "/2", name="five", version=2)
    logs = handler.run_inference(model_zoo.make_examples([1.0]), handler.load_model())
    assert logs[0].predict_log.response.outputs["output_0"].float_val[0] == 10.0


def test_classify_logs_record_name_and_version(tmp_path):
    base = model_zoo.versioned(tmp_path / "tf1", model_zoo.tf1_estimator_style, versions=(4,))
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=base, signature_names=("classify",)))
    [log] = handler.run_inference(model_zoo.make_examples([1.0]), handler.load_model())
    spec = log.classify_log.response.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("tf1", 4, "classify")
    assert log.classify_log.request.model_spec.version.value == 4


def test_multi_inference_results_record_name_and_version(tmp_path):
    base = model_zoo.versioned(tmp_path / "tf1", model_zoo.tf1_estimator_style, versions=(2,))
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=base,
                                                signature_names=("classify", "regress")))
    [log] = handler.run_inference(model_zoo.make_examples([1.0]), handler.load_model())
    assert [(r.model_spec.name, r.model_spec.version.value, r.model_spec.signature_name)
            for r in log.multi_inference_log.response.results] == \
        [("tf1", 2, "classify"), ("tf1", 2, "regress")]


def test_plain_directory_logs_leave_the_version_unset(zoo):
    handler = bi.SavedModelHandler(bi.ModelSpec(model_path=zoo.five))
    [log] = handler.run_inference(model_zoo.make_examples([1.0]), handler.load_model())
    assert not log.predict_log.response.model_spec.HasField("version")
    assert log.predict_log.response.model_spec.name == ""


def test_version_options_on_a_plain_directory_are_refused(zoo):
    with pytest.raises(bi.ConfigurationError) as error:
        bi.RunInference(bi.ModelSpec(model_path=zoo.five, poll_interval_secs=1.0))
    assert str(error.value) == (
        "ModelSpec.poll_interval_secs applies to a versioned base path (numbered version "
        f"folders), but {zoo.five!r} is a SavedModel directory. Point model_path at the "
        "folder holding the versions, or unset poll_interval_secs."
    )


def test_policy_that_allows_no_present_version_fails_at_build(tmp_path):
    base = _versioned(tmp_path)
    with pytest.raises(bi.ModelPathError) as error:
        bi.RunInference(bi.ModelSpec(model_path=base,
                                     version_policy=bi.VersionPolicy.specific(9)))
    assert str(error.value).replace(base, "<BASE>") == (
        "no complete model version under '<BASE>' for version policy specific(9); complete "
        "versions: 1, 2; incomplete (saved_model.pb or variables still missing): none. "
        "Export a SavedModel into a numbered folder such as '<BASE>/3', or point "
        "model_path at a SavedModel directory."
    )


@pytest.mark.parametrize(("build", "message"), [
    (lambda: bi.VersionPolicy.latest(0),
     "VersionPolicy.latest needs a positive number of versions; got 0. "
     "Example: VersionPolicy.latest(2)."),
    (lambda: bi.VersionPolicy.specific(),
     "VersionPolicy.specific needs at least one version number; got none. "
     "Example: VersionPolicy.specific(3)."),
    (lambda: bi.VersionPolicy.specific("2"),
     "VersionPolicy.specific takes version numbers (integers >= 0); got ('2',). "
     "Example: VersionPolicy.specific(1, 2)."),
    (lambda: bi.ModelSpec(model_path="/m", poll_interval_secs=0),
     "ModelSpec.poll_interval_secs must be a positive number of seconds; got 0. "
     "TF Serving polls every 1 s; 5 to 60 s suits a bucket."),
    (lambda: bi.ModelSpec(model_path="/m", model_name=""),
     "ModelSpec.model_name must be a non-empty string; got ''."),
    (lambda: bi.ModelSpec(model_path="/m", version_policy="latest"),
     "ModelSpec.version_policy must be a VersionPolicy; got str. "
     "Example: version_policy=VersionPolicy.latest(2)."),
])
def test_version_configuration_errors(build, message):
    with pytest.raises(bi.ConfigurationError) as error:
        build()
    assert str(error.value) == message


def test_versioned_model_shared_across_processes_scores_through_the_proxy(tmp_path):
    base = _versioned(tmp_path)
    logs = _score(bi.ModelSpec(model_path=base, share_across_processes=True), tmp_path)
    assert [(log.predict_log.response.model_spec.version.value,
             log.predict_log.response.outputs["output_0"].float_val[0]) for log in logs] == \
        [(2, 10.0), (2, 20.0)]


def test_only_plain_decimal_folders_are_versions(tmp_path):
    # Names come from a listing: "01" would be loaded as "1", "²" crashed int().
    base = _versioned(tmp_path, versions=(1,))
    for name in ("01", "\u00b2", "\u0663", "v2", "-3"):
        shutil.copytree(os.path.join(base, "1"), os.path.join(base, name))
    assert _versions.numeric_children(base) == [1]
    assert list(_versions.list_version_files(base)) == [1]
    assert list(_versions.list_version_files(remote(base))) == [1]
    assert [_versions.version_number(n) for n in ("0", "7", "10", "07", "\u0663", "")] == [
        0, 7, 10, None, None, None]


def test_listing_in_an_error_is_escaped_and_cut(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "evil\x1b[2Jname").write_bytes(b"")
    for i in range(24):
        (model / f"f{i:02d}").write_bytes(b"")
    with pytest.raises(bi.ModelPathError) as error:
        bi.SavedModelHandler(bi.ModelSpec(model_path=str(model)))
    assert "'evil\\x1b[2Jname'" in str(error.value)
    assert "\x1b" not in str(error.value)
    assert str(error.value).count(", ") == 19 and "and 5 more." in str(error.value)
