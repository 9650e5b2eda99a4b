"""A real Beam filesystem that behaves like an object store: flat names, no directories.

``memobjects://bucket/name`` objects live in this process's memory, keyed by their full
name, exactly as a bucket lists them: a name may hold ``..``, empty parts or a leading
slash, which no local directory can, so tests can hand beam_infer the listings an
untrusted bucket could. Importing this module registers the scheme.
"""

from __future__ import annotations

import io
import os
import threading
import time

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem

SCHEME = "memobjects"
PREFIX = f"{SCHEME}://"

_OBJECTS: dict[str, tuple[bytes, float]] = {}
_LOCK = threading.Lock()


def put(name: str, data: bytes) -> None:
    """Stores object ``memobjects://<name>`` (overwriting, with a new modification time)."""
    with _LOCK:
        _OBJECTS[PREFIX + name] = (data, time.time())


def upload_dir(local_dir: str, name: str) -> str:
    """Uploads every file under ``local_dir`` as one object each (no folder objects)."""
    for folder, _, files in os.walk(local_dir):
        for file in files:
            path = os.path.join(folder, file)
            relative = os.path.relpath(path, local_dir).replace(os.sep, "/")
            with open(path, "rb") as f:
                put(f"{name}/{relative}", f.read())
    return PREFIX + name


def clear(prefix: str = "") -> None:
    with _LOCK:
        for key in [k for k in _OBJECTS if k.startswith(PREFIX + prefix)]:
            del _OBJECTS[key]


class _Writer(io.BytesIO):
    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def close(self) -> None:
        if not self.closed:
            with _LOCK:
                _OBJECTS[self._path] = (self.getvalue(), time.time())
        super().close()


class MemoryObjectStore(FileSystem):
    """Objects in memory under ``memobjects://``; see the module docstring."""

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        pass  # an object store has no directories

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str):
        with _LOCK:
            items = sorted(_OBJECTS.items())
        for path, (data, mtime) in items:
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), mtime)

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        return _Writer(path)

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        with _LOCK:
            if path not in _OBJECTS:
                raise BeamIOError(f"no object {path}", {path: FileNotFoundError(path)})
            return io.BytesIO(_OBJECTS[path][0])

    def copy(self, source_file_names, destination_file_names):
        with _LOCK:
            for source, destination in zip(source_file_names, destination_file_names,
                                           strict=True):
                _OBJECTS[destination] = (_OBJECTS[source][0], time.time())

    def rename(self, source_file_names, destination_file_names):
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path: str) -> bool:
        with _LOCK:
            return path in _OBJECTS

    def size(self, path: str) -> int:
        return len(_OBJECTS[path][0])

    def last_updated(self, path: str) -> float:
        return _OBJECTS[path][1]

    def checksum(self, path: str) -> str:
        return str(hash(_OBJECTS[path][0]))

    def metadata(self, path: str) -> FileMetadata:
        data, mtime = _OBJECTS[path]
        return FileMetadata(path, len(data), mtime)

    def delete(self, paths) -> None:
        with _LOCK:
            for path in paths:
                _OBJECTS.pop(path, None)
