"""A GCS emulator (gcp-storage-emulator) for the session, and helpers to fill buckets.

``gcs`` points the test at it: ``STORAGE_EMULATOR_HOST`` is set, which Beam's
GCSFileSystem (through google-cloud-storage) honours unpatched. With no Google
credentials on the machine, Beam retries its credential lookup for ~20 s on the first
GCS call of a process; ``gcs`` marks that lookup as done (credentials None, so Beam
uses the anonymous client it would fall back to anyway), for the test only.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import sys
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from tests.emulators import _server

PROJECT = "test-project"
ENV = "STORAGE_EMULATOR_HOST"
_buckets = itertools.count()


@dataclasses.dataclass(frozen=True)
class GcsEmulator:
    """The running emulator; ``endpoint`` is what ``STORAGE_EMULATOR_HOST`` holds."""

    endpoint: str

    def client(self) -> storage.Client:
        return storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.endpoint})

    def new_bucket(self, name: str = "bucket") -> str:
        """Creates a bucket no other test uses and returns its name."""
        bucket = f"{name}-{os.getpid()}-{next(_buckets)}"
        self.client().create_bucket(bucket)
        return bucket

    def upload_tree(self, local_dir: str, url: str, *, folder_objects: bool = False) -> str:
        """Uploads every file under ``local_dir`` to ``url`` (``gs://bucket/prefix``), one
        object per file, as ``gcloud storage cp -r`` does: no object stands for a folder
        unless ``folder_objects`` asks for the zero-byte ``folder/`` placeholders that
        console-made folders have. Returns ``url``.
        """
        bucket_name, prefix = split(url)
        bucket = self.client().bucket(bucket_name)
        if folder_objects:
            bucket.blob(prefix + "/").upload_from_string(b"")
        for root, folders, files in os.walk(local_dir):
            relative = os.path.relpath(root, local_dir).replace(os.sep, "/")
            base = prefix if relative == "." else f"{prefix}/{relative}"
            if folder_objects:
                for folder in folders:
                    bucket.blob(f"{base}/{folder}/").upload_from_string(b"")
            for name in sorted(files):
                bucket.blob(f"{base}/{name}").upload_from_filename(os.path.join(root, name))
        return url

    def names(self, url: str) -> list[str]:
        """The object names under ``url`` (a ``gs://bucket/prefix``), sorted."""
        bucket_name, prefix = split(url)
        return sorted(b.name for b in self.client().list_blobs(bucket_name, prefix=prefix))

    def read_text(self, url: str) -> str:
        bucket_name, name = split(url)
        return self.client().bucket(bucket_name).blob(name).download_as_text()


def split(url: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → ``("bucket", "a/b")``."""
    bucket, _, name = url.removeprefix("gs://").partition("/")
    return bucket, name.rstrip("/")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """gcp-storage-emulator, in memory, on a free loopback port, for the whole session."""
    if importlib.util.find_spec("gcp_storage_emulator") is None:
        pytest.fail("gcp-storage-emulator is not installed; run "
                    "pip install -r requirements-test.txt", pytrace=False)
    with _server.running(
            "gcp-storage-emulator",
            lambda port: [sys.executable, "-m", "gcp_storage_emulator", "start",
                          f"--host={_server.HOST}", f"--port={port}", "--in-memory", "-q"],
            lambda port: f"http://{_server.HOST}:{port}/storage/v1/b?project={PROJECT}",
            tmp_path_factory.mktemp("gcs_emulator"), start_timeout_secs=30) as port:
        yield GcsEmulator(endpoint=f"http://{_server.HOST}:{port}")


@pytest.fixture
def gcs(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> GcsEmulator:
    """The session's GCS emulator, with this test's ``gs://`` paths pointed at it."""
    from apache_beam.internal.gcp import auth

    monkeypatch.setenv(ENV, gcs_emulator.endpoint)
    # Beam's ~20 s credential retry, skipped: it would end with no credentials anyway.
    monkeypatch.setattr(auth._Credentials, "_credentials_init", True)
    monkeypatch.setattr(auth._Credentials, "_credentials", None)
    return gcs_emulator
