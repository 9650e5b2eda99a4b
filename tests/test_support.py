"""The test support code: models built only when used, tiers in sync, the portable patch."""

from __future__ import annotations

import pathlib

import pytest

from tests import conftest
from tests.support import portable

TESTS = pathlib.Path(__file__).resolve().parent


def test_a_zoo_builds_only_the_models_a_test_uses(tmp_path_factory):
    zoo = conftest.Zoo(tmp_path_factory, "lazy_zoo")
    assert zoo.built() == []
    path = zoo.five
    assert zoo.built() == ["five"]
    assert zoo.five == path  # built once
    assert pathlib.Path(path, "saved_model.pb").is_file()
    assert sorted(p.name for p in pathlib.Path(path).parent.iterdir()) == ["five"]


def test_every_module_in_a_tier_list_exists_and_is_in_one_list():
    lists = {"UNIT_MODULES": conftest.UNIT_MODULES, "E2E_MODULES": conftest.E2E_MODULES,
             "PORTABLE_MODULES": conftest.PORTABLE_MODULES}
    modules = {path.stem for path in TESTS.glob("test_*.py")}
    for name, listed in lists.items():
        assert listed <= modules, f"{name} names missing modules: {sorted(listed - modules)}"
    assert not conftest.UNIT_MODULES & conftest.E2E_MODULES
    assert not (conftest.UNIT_MODULES | conftest.E2E_MODULES) & conftest.PORTABLE_MODULES
    assert conftest.tier_of_module("test_support") == "unit"
    assert conftest.tier_of_module("test_parity_with_tfx_bsl") == "pipeline"


def test_every_collected_test_has_exactly_one_tier(request):
    for item in request.session.items:
        tiers = [m.name for m in item.iter_markers() if m.name in conftest.TIERS]
        assert len(tiers) == 1, (item.nodeid, tiers)


def test_the_installed_beam_has_the_private_the_portable_launcher_patches():
    portable.check_beam_privates()  # raises, naming the private, if Beam changed it


class _ChangedBeamJob:
    """A BeamJob whose _invoke_runner grew a parameter and that sets no private fields."""

    def __init__(self) -> None:
        self.job_id = "renamed"

    def _invoke_runner(self, options):
        raise AssertionError("never called")

    def set_state(self, state) -> None:
        pass

    def pipeline_options(self) -> None:
        pass


class _ChangedRunner:
    def __init__(self, provision_info=None) -> None:
        self.num_workers = 1

    def run_via_runner_api(self) -> None:
        pass


def test_a_changed_beam_private_fails_naming_it_its_version_and_what_to_do():
    with pytest.raises(portable.BeamPrivateChangedError) as error:
        portable.check_beam_privates(_ChangedBeamJob, _ChangedRunner)
    message = str(error.value)
    assert message.startswith(
        "tests/support/portable.py replaces the Beam private "
        "apache_beam.runners.portability.local_job_service.BeamJob._invoke_runner (written "
        "against apache-beam 2.77; installed: ")
    for problem in ("_ChangedBeamJob._invoke_runner takes (self, options), not (self)",
                    "_ChangedBeamJob no longer sets self._provision_info",
                    "_ChangedBeamJob no longer sets self._job_id",
                    "_ChangedRunner no longer keeps an int _num_workers (found None)"):
        assert problem in message
    assert message.endswith(
        "Read the installed BeamJob._invoke_runner and update "
        "_invoke_runner_with_sdk_worker_parallelism (and BEAM_WRITTEN_AGAINST) to match; "
        "meanwhile portable_services(honor_sdk_worker_parallelism=False) runs the stock job "
        "service (one SDK worker per job).")


def test_a_beam_private_that_is_gone_or_not_a_function_is_named():
    class NoMethod(_ChangedBeamJob):
        _invoke_runner = None

    class StaticMethod(_ChangedBeamJob):
        _invoke_runner = staticmethod(lambda: None)

    assert "NoMethod._invoke_runner no longer exists" in portable.beam_private_problems(
        NoMethod, _ChangedRunner)[0]
    assert portable.beam_private_problems(StaticMethod, _ChangedRunner)[0] == \
        "StaticMethod._invoke_runner is a staticmethod, not a plain method"
