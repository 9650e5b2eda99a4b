"""Local copies of remote models: unsafe names refused, nothing planted served, bounded."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import uuid

import apache_beam as beam
import pytest

import beam_infer as bi
from beam_infer.saved_model import _model_cache
from beam_infer.saved_model._loading import LoadedModel
from tests.support import model_zoo, object_store
from tests.support.beam_helpers import run_collect
from tests.support.remote_fs import remote


def _files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, names in os.walk(root) for f in names)


@pytest.fixture
def cache(tmp_path) -> bi.ModelCache:
    return bi.ModelCache(directory=str(tmp_path / "cache"))


@pytest.fixture
def bucket() -> str:
    name = f"bucket-{uuid.uuid4().hex[:12]}"
    yield name
    object_store.clear(name)


def _copy(path: str, cache: bi.ModelCache) -> tuple[str, list[str]]:
    with _model_cache.local_copy(path, cache) as local:
        return local, _files(local)


def test_a_remote_model_is_copied_once_and_reused_while_its_listing_is_unchanged(
        zoo, cache, bucket):
    path = object_store.upload_dir(zoo.five, f"{bucket}/five")
    local, files = _copy(path, cache)
    assert files == _files(zoo.five)
    assert local.startswith(cache.directory + os.sep)
    marker = os.path.join(local, "saved_model.pb")
    before = os.stat(marker).st_ino
    assert _copy(path, cache) == (local, files)
    assert os.stat(marker).st_ino == before  # not copied again


@pytest.mark.parametrize("name", [
    "../../escaped", "variables/../../../escaped", "/etc/escaped", "a//b", "./x", "a\\..\\b",
])
def test_unsafe_object_names_are_refused_and_nothing_is_written_outside(
        zoo, cache, bucket, tmp_path, name):
    path = object_store.upload_dir(zoo.five, f"{bucket}/five")
    object_store.put(f"{bucket}/five/{name}", b"planted")
    with pytest.raises(bi.ModelLoadError, match=r"has an unsafe name") as raised:
        _copy(path, cache)
    assert repr(name) in str(raised.value) and path in str(raised.value)
    assert not os.path.exists(tmp_path / "escaped")
    assert not os.path.exists("/etc/escaped")
    leftovers = [f for f in _files(cache.directory) if not f.endswith(".lock")]
    assert leftovers == []


def test_a_re_exported_model_is_copied_again(zoo, cache, bucket):
    path = object_store.upload_dir(zoo.five, f"{bucket}/five")
    first, _ = _copy(path, cache)
    object_store.clear(f"{bucket}/five")
    object_store.upload_dir(zoo.ten, f"{bucket}/five")  # same path, another model
    second, files = _copy(path, cache)
    assert second != first
    assert files == _files(zoo.ten)
    model = LoadedModel(path, ["serve"], ["serving_default"], cache=cache)
    example = model_zoo.make_examples([2.0])[0].SerializeToString()
    (value,) = model.run("serving_default", {"examples": [example]})["output_0"].ravel()
    assert value == 20.0
    assert not os.path.exists(first)  # the superseded copy is removed


def test_a_directory_planted_where_a_copy_goes_is_replaced_not_served(zoo, cache, bucket):
    path = object_store.upload_dir(zoo.ten, f"{bucket}/ten")
    local, _ = _copy(path, cache)
    entry = os.path.dirname(local)
    shutil.rmtree(entry)
    shutil.copytree(zoo.five, os.path.join(entry, "model"))  # the wrong model, no manifest
    model = LoadedModel(path, ["serve"], ["serving_default"], cache=cache)
    example = model_zoo.make_examples([1.0])[0].SerializeToString()
    assert model.run("serving_default", {"examples": [example]})["output_0"].ravel()[0] == 10.0


def test_a_copy_whose_files_changed_on_disk_is_copied_again(zoo, cache, bucket):
    path = object_store.upload_dir(zoo.ten, f"{bucket}/ten")
    local, files = _copy(path, cache)
    weights = os.path.join(local, "variables", "variables.data-00000-of-00001")
    os.remove(weights)
    os.symlink(os.path.join(zoo.five, "variables", "variables.data-00000-of-00001"), weights)
    _, files_again = _copy(path, cache)
    assert files_again == files
    assert not os.path.islink(weights)


def test_a_symlinked_cache_directory_is_refused_with_how_to_fix_it(zoo, tmp_path, bucket):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "cache"
    link.symlink_to(elsewhere)
    path = object_store.upload_dir(zoo.five, f"{bucket}/five")
    with pytest.raises(bi.ModelLoadError, match=r"is a symlink .*ModelCache\(directory=\.\.\.\)"):
        _copy(path, bi.ModelCache(directory=str(link)))
    assert list(elsewhere.iterdir()) == []


def test_a_cache_directory_owned_by_someone_else_is_refused(zoo, tmp_path, bucket):
    foreign = tmp_path / "cache"
    foreign.mkdir()
    if os.getuid() != 0:
        pytest.skip("making a directory owned by another user needs root (chown)")
    os.chown(foreign, 4321, 4321)
    path = object_store.upload_dir(zoo.five, f"{bucket}/five")
    with pytest.raises(bi.ModelLoadError, match=r"is owned by uid 4321"):
        _copy(path, bi.ModelCache(directory=str(foreign)))


def test_the_default_cache_is_private_to_the_user(zoo, bucket):
    path = object_store.upload_dir(zoo.five, f"{bucket}/five")
    local, _ = _copy(path, None)
    root = _model_cache.default_directory()
    assert local.startswith(root + os.sep)
    for directory in (root, os.path.dirname(root)):
        info = os.lstat(directory)
        assert info.st_uid == os.getuid() and info.st_mode & 0o777 == 0o700


def test_a_planted_default_cache_is_never_written_through(zoo, bucket, tmp_path, monkeypatch):
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(shared_tmp))
    monkeypatch.setattr(_model_cache, "_fallback_root", None)
    target = tmp_path / "attacker"
    target.mkdir()
    (shared_tmp / f"beam_infer-{os.getuid()}").symlink_to(target)
    path = object_store.upload_dir(zoo.five, f"{bucket}/five")
    local, files = _copy(path, None)
    assert files == _files(zoo.five)
    assert not local.startswith(str(shared_tmp / f"beam_infer-{os.getuid()}"))
    assert list(target.iterdir()) == []


def test_copies_are_bounded_by_max_bytes_least_recently_used_first(zoo, tmp_path, bucket):
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(zoo.five) for f in fs)
    cache = bi.ModelCache(directory=str(tmp_path / "cache"), max_bytes=int(size * 2.5))
    paths = [object_store.upload_dir(zoo.five, f"{bucket}/m{i}") for i in range(4)]
    locals_ = [_copy(p, cache)[0] for p in paths]
    assert [os.path.exists(p) for p in locals_] == [False, False, True, True]
    _copy(paths[2], cache)  # used again: now the most recent
    _copy(paths[0], cache)
    assert [os.path.exists(p) for p in locals_[1:]] == [False, True, False]


def test_a_copy_being_loaded_is_not_removed(zoo, tmp_path, bucket):
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(zoo.five) for f in fs)
    cache = bi.ModelCache(directory=str(tmp_path / "cache"), max_bytes=size)
    first = object_store.upload_dir(zoo.five, f"{bucket}/first")
    second = object_store.upload_dir(zoo.five, f"{bucket}/second")
    with _model_cache.local_copy(first, cache) as held:
        _copy(second, cache)
        assert os.path.isdir(held)


def _copy_in_child(args: tuple[str, str]) -> str:
    path, directory = args
    with _model_cache.local_copy(path, bi.ModelCache(directory=directory)) as local:
        return local


@pytest.mark.pipeline  # processes or a pipeline: kept out of the one-minute unit tier
def test_processes_of_one_machine_make_one_copy(zoo, tmp_path):
    source = str(tmp_path / "bucket" / "five")
    shutil.copytree(zoo.five, source)
    directory = str(tmp_path / "cache")
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_copy_in_child, [(remote(source), directory)] * 6)
    assert len(set(results)) == 1
    entries = [n for n in os.listdir(directory) if not n.endswith(".lock")]
    assert len(entries) == 1


def test_a_remote_model_is_scored_through_the_public_api(zoo, tmp_path):
    source = str(tmp_path / "bucket" / "five")
    shutil.copytree(zoo.five, source)
    spec = bi.ModelSpec(model_path=remote(source),
                        model_cache=bi.ModelCache(directory=str(tmp_path / "cache")))

    def build(p):
        return {"logs": p | beam.Create(model_zoo.make_examples([2.0])) | bi.RunInference(spec)}

    outputs, _ = run_collect(build, str(tmp_path / "out"))
    (log,) = outputs["logs"]
    assert log.predict_log.response.outputs["output_0"].float_val[0] == 10.0
    assert [n for n in os.listdir(tmp_path / "cache") if not n.endswith(".lock")]


def test_model_cache_options_are_checked_when_the_spec_is_built():
    with pytest.raises(bi.ConfigurationError, match=r"ModelCache.directory must be an "
                                                    r"absolute local path; got 'models'"):
        bi.ModelCache(directory="models")
    with pytest.raises(bi.ConfigurationError, match=r"ModelCache.max_bytes must be a positive"):
        bi.ModelCache(max_bytes=0)
    with pytest.raises(bi.ConfigurationError, match=r"ModelSpec.model_cache must be a "
                                                    r"ModelCache; got str"):
        bi.ModelSpec(model_path="/m", model_cache="/tmp/x")
