"""A real Beam filesystem with a non-local scheme, backed by local disk.

``testremote:///abs/path`` behaves like a bucket to beam_infer: it is not local, so the
model is copied through Beam's ``FileSystems`` exactly as from ``gs://``. Importing this
module registers the scheme (Beam finds FileSystem subclasses by scheme).
"""

from __future__ import annotations

from apache_beam.io.filesystem import FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "testremote"
PREFIX = f"{SCHEME}://"


def remote(path: str) -> str:
    """The ``testremote://`` name of a local absolute path."""
    return PREFIX + path


class TestRemoteFileSystem(LocalFileSystem):
    """Local files under a remote-looking scheme."""

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    @staticmethod
    def _local(path: str) -> str:
        return path[len(PREFIX):] if path.startswith(PREFIX) else path

    def match(self, patterns, limits=None):
        results = super().match([self._local(p) for p in patterns], limits)
        return [
            MatchResult(PREFIX + r.pattern, [
                FileMetadata(PREFIX + m.path, m.size_in_bytes, m.last_updated_in_seconds)
                for m in r.metadata_list])
            for r in results
        ]

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def exists(self, path):
        return super().exists(self._local(path))
