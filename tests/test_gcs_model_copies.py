"""The remote-copy rules on GCS (gcp-storage-emulator), through the public API: a planted
copy is not served, a re-export is, the default cache is private.

Unsafe object names (``..`` parts) are tested with ``tests/support/object_store.py`` in
``test_model_cache.py``: gcp-storage-emulator drops the connection on an upload of such a
name, so it cannot hold one.
"""

from __future__ import annotations

import os
import shutil

import apache_beam as beam
import pytest

import beam_infer as bi
from beam_infer.saved_model import _model_cache
from tests.support import model_zoo
from tests.support.beam_helpers import run_collect

pytestmark = pytest.mark.emulators


def _score(spec: bi.ModelSpec, tmp_path, value: float = 2.0) -> float:
    def build(p):
        return {"logs": p | beam.Create(model_zoo.make_examples([value])) | bi.RunInference(spec)}

    outputs, _ = run_collect(build, str(tmp_path / f"out-{len(os.listdir(tmp_path))}"))
    (log,) = outputs["logs"]
    return log.predict_log.response.outputs["output_0"].float_val[0]


def _entries(cache: bi.ModelCache) -> list[str]:
    return sorted(n for n in os.listdir(cache.directory) if not n.endswith(".lock"))


def test_a_planted_copy_is_not_served_and_a_re_export_is(gcs, zoo, tmp_path):
    url = gcs.upload_tree(zoo.ten, f"gs://{gcs.new_bucket()}/models/m")
    cache = bi.ModelCache(directory=str(tmp_path / "cache"))
    spec = bi.ModelSpec(model_path=url, model_cache=cache)
    assert _score(spec, tmp_path) == 20.0
    (entry,) = _entries(cache)
    model_dir = os.path.join(cache.directory, entry, "model")
    shutil.rmtree(model_dir)
    shutil.copytree(zoo.five, model_dir)  # someone swaps the files of the copy
    assert _score(spec, tmp_path) == 20.0  # checked against the listing: copied again

    bucket, prefix = url.removeprefix("gs://").split("/", 1)
    for blob in gcs.client().list_blobs(bucket, prefix=prefix + "/"):
        blob.delete()
    gcs.upload_tree(zoo.five, url)  # re-exported to the same path
    assert _score(spec, tmp_path) == 10.0
    assert len(_entries(cache)) == 1  # the superseded copy is gone


def test_the_default_cache_on_gcs_is_private(gcs, zoo, tmp_path):
    url = gcs.upload_tree(zoo.five, f"gs://{gcs.new_bucket()}/models/five")
    assert _score(bi.ModelSpec(model_path=url), tmp_path) == 10.0
    root = _model_cache.default_directory()
    assert os.lstat(root).st_mode & 0o777 == 0o700
