"""Local copies of remote SavedModels, made so that nothing planted or stale is served.

``tf.saved_model.load`` reads local files, so a model on a remote Beam filesystem
(``gs://``, ``s3://``, ...) is copied to local disk first, once per machine. Everything
about the remote side is untrusted (object names come from a bucket listing), and so is
every file the copy did not write itself:

* **Where copies live**: ``ModelCache.directory``, default ``<temp dir>/beam_infer-<uid>/
  models``: created with mode 0700, and used only while it is a real directory (not a
  symlink) owned by this user that no one else can write. An unusable default (planted
  by someone else) is replaced by a fresh private directory for this process, with an
  ERROR log line; an unusable configured directory fails the load with how to fix it.
* **What a copy is**: one directory per remote path *and* listing: its name is a digest of
  the path and of every object's name, size and modification time, so a model re-exported
  to the same path is copied again, and a copy is never mistaken for another listing's.
* **Object names**: a name with ``..``, ``.`` or empty parts, an absolute name or a
  backslash is refused (the error names the object), every target must resolve inside
  the copy, and files are created exclusively, never through a symlink.
* **Reuse**: a copy is served again only if its manifest names the same path and its
  files are exactly the listed names and sizes, as regular files owned by this user;
  anything else found under its name is removed and the model copied afresh.
* **Concurrency**: copies are written aside and renamed into place under a per-copy lock
  file, so the processes of one machine make one copy and wait for it.
* **Disk**: after a new copy, older copies of the same path are removed, then the least
  recently used others until the directory holds at most ``ModelCache.max_bytes``; a copy
  that a process is loading (it holds a shared lock on it) is never removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator

from apache_beam.io.filesystems import FileSystems

from beam_infer._config import ModelCache
from beam_infer._errors import ModelLoadError
from beam_infer._messages import detail
from beam_infer._private_dirs import make_private, open_private_file, user_directory

_LOG = logging.getLogger(__name__)
_ENTRY = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{16}$")
_MANIFEST = "manifest.json"
_MODEL = "model"
_STAGING_PREFIX = ".staging-"
_STALE_STAGING_SECS = 3600.0
_fallback_root: str | None = None  # this process's private root when the default is unusable


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


def default_directory() -> str:
    return os.path.join(user_directory(), "models")


@dataclasses.dataclass(frozen=True)
class _Listing:
    """A remote model's objects: ``{relative name: (size, mtime)}``, checked and sorted."""

    source: str
    files: dict[str, tuple[int, float | None]]

    @property
    def key(self) -> str:
        fingerprint = json.dumps([self.source, sorted(self.files.items())]).encode()
        return (hashlib.sha256(self.source.encode()).hexdigest()[:16] + "-"
                + hashlib.sha256(fingerprint).hexdigest()[:16])

    @property
    def total_bytes(self) -> int:
        return sum(size for size, _ in self.files.values())


@contextlib.contextmanager
def local_copy(model_path: str, cache: ModelCache | None = None) -> Iterator[str]:
    """A local directory holding the SavedModel at ``model_path``, for as long as it is used.

    Local paths are used in place. Remote ones are copied as the module docstring says;
    the copy is held (a shared lock) until the ``with`` block ends, so load the model
    inside it.

    Raises:
        ModelLoadError: the listing holds an unsafe name, the copy failed, or the cache
            directory cannot be used; the message says which and how to fix it.
    """
    if is_local(model_path):
        yield model_path.removeprefix("file://")
        return
    cache = cache or ModelCache()
    listing = _list(model_path)
    root = _root(cache)
    entry = os.path.join(root, listing.key)
    lock = _open_lock(entry + ".lock")
    try:
        copied = False
        while True:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one copy per machine: the others wait here
            if not _is_valid(entry, listing):
                _remove(entry)
                _copy(listing, root, entry)
                copied = True
            _touch(entry)
            # Shared while loading, so no eviction removes it. The switch from exclusive is
            # not atomic: if an eviction took the copy in between, make it again.
            fcntl.flock(lock, fcntl.LOCK_SH)
            if os.path.isdir(entry):
                break
        if copied:
            _evict(root, keep=listing.key, max_bytes=cache.max_bytes)
        yield os.path.join(entry, _MODEL)
    finally:
        os.close(lock)


def forget(model_path: str, cache: ModelCache | None = None) -> None:
    """Removes the copy of ``model_path``'s current listing, unless a process is using it.

    A model that failed to load may have been copied mid-upload; the next load copies
    it again instead of reusing the copy.
    """
    if is_local(model_path):
        return
    cache = cache or ModelCache()
    with contextlib.suppress(OSError, ModelLoadError):
        _remove_unused(_root(cache), _list(model_path).key)


# --- the remote listing ---------------------------------------------------------------


def _list(source: str) -> _Listing:
    prefix = source.rstrip("/") + "/"
    try:
        matches = FileSystems.match([prefix + "**"])[0].metadata_list
    except Exception as e:  # any filesystem's error, reported as a load error
        raise ModelLoadError(
            f"could not list the model at {source!r}: {type(e).__name__}: {detail(str(e))}. "
            "Check that workers can read the path."
        ) from e
    files: dict[str, tuple[int, float | None]] = {}
    for metadata in matches:
        if not metadata.path.startswith(prefix):
            raise ModelLoadError(
                f"listing {source!r} returned {detail(metadata.path)!r}, which is not under "
                "it; refusing to copy the model. Check the filesystem that serves the path."
            )
        relative = metadata.path[len(prefix):]
        if not relative or relative.endswith("/"):
            continue  # a folder placeholder object
        _check_name(source, relative)
        files[relative] = (int(metadata.size_in_bytes), metadata.last_updated_in_seconds)
    if not files:
        raise ModelLoadError(
            f"nothing found under {source!r} on this worker; it held a SavedModel when the "
            "pipeline was built. Restore it, or point ModelSpec(model_path=...) at a path "
            "that stays in place while the job runs."
        )
    return _Listing(source=source, files=files)


def _check_name(source: str, relative: str) -> None:
    parts = relative.split("/")
    if relative.startswith("/") or "\\" in relative or "\x00" in relative \
            or any(part in ("", ".", "..") for part in parts):
        raise ModelLoadError(
            f"object {detail(relative)!r} under {source!r} has an unsafe name (an absolute "
            "path, a '..', '.' or empty part, or a backslash), so the model is not copied: "
            "such a name could write outside the local copy. Remove or rename the object."
        )


# --- the cache directory ----------------------------------------------------------------


def _root(cache: ModelCache) -> str:
    global _fallback_root
    if cache.directory is not None:
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(os.path.abspath(cache.directory)), exist_ok=True)
        problem = make_private(cache.directory)
        if problem:
            raise ModelLoadError(
                f"ModelCache.directory {cache.directory!r} {problem}; beam_infer keeps model "
                "copies only in a directory that this user owns and no one else can write. "
                "Remove it, or point ModelSpec(model_cache=bi.ModelCache(directory=...)) "
                "elsewhere."
            )
        return cache.directory
    default = default_directory()
    problem = make_private(os.path.dirname(default)) or make_private(default)
    if not problem:
        return default
    if _fallback_root is None or make_private(_fallback_root):
        _fallback_root = tempfile.mkdtemp(prefix="beam_infer-models-")
        _LOG.error("beam_infer: the model cache %s %s; copying models to %s for this "
                   "process instead. Remove it, or set ModelSpec(model_cache=...).",
                   default, problem, _fallback_root)
    return _fallback_root


def _open_lock(path: str) -> int:
    return open_private_file(path)


# --- one copy -----------------------------------------------------------------------------


def _copy(listing: _Listing, root: str, entry: str) -> None:
    staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=root)
    model = os.path.join(staging, _MODEL)
    try:
        os.mkdir(model, 0o700)
        inside = os.path.realpath(model) + os.sep
        for relative, (size, _) in sorted(listing.files.items()):
            target = os.path.join(model, *relative.split("/"))
            if not os.path.realpath(target).startswith(inside):
                raise OSError(f"object {relative!r} resolves outside the copy")
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            source = listing.source.rstrip("/") + "/" + relative
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with FileSystems.open(source) as src, os.fdopen(os.open(target, flags, 0o600),
                                                              "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if os.path.getsize(target) != size:
                raise OSError(f"object {relative!r} changed while it was copied (listed "
                              f"{size} bytes, read {os.path.getsize(target)})")
        _write_manifest(staging, listing)
        os.rename(staging, entry)
    except Exception as e:  # any filesystem's error, reported as a load error
        shutil.rmtree(staging, ignore_errors=True)
        raise ModelLoadError(
            f"could not copy the model from {listing.source!r} to local disk at "
            f"{entry!r}: {type(e).__name__}: {detail(str(e))}. Check that workers can read "
            "the path and have disk space (ModelSpec(model_cache=bi.ModelCache(...)))."
        ) from e


def _write_manifest(staging: str, listing: _Listing) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(os.path.join(staging, _MANIFEST), flags, 0o600), "w") as f:
        json.dump({"source": listing.source,
                   "files": {name: size for name, (size, _) in listing.files.items()}}, f)


def _is_valid(entry: str, listing: _Listing) -> bool:
    """True if ``entry`` is this listing's copy, made by us, with nothing added or missing."""
    try:
        if not _owned_dir(entry):
            return False
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(os.path.join(entry, _MANIFEST), flags), "rb") as f:
            if not _owned_file(os.fstat(f.fileno())):
                return False
            manifest = json.loads(f.read(1 << 24))
        expected = {name: size for name, (size, _) in listing.files.items()}
        if manifest != {"source": listing.source, "files": expected}:
            return False
        model = os.path.join(entry, _MODEL)
        if not _owned_dir(model):
            return False
        found: dict[str, int] = {}
        for folder, dirs, names in os.walk(model):
            for name in dirs:
                if not _owned_dir(os.path.join(folder, name)):
                    return False
            for name in names:
                info = os.lstat(os.path.join(folder, name))
                if not _owned_file(info):
                    return False
                relative = os.path.relpath(os.path.join(folder, name), model)
                found[relative.replace(os.sep, "/")] = info.st_size
        return found == expected
    except (OSError, ValueError):
        return False


def _owned_dir(path: str) -> bool:
    info = os.lstat(path)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def _owned_file(info: os.stat_result) -> bool:
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid()


def _touch(entry: str) -> None:
    with contextlib.suppress(OSError):
        os.utime(entry)


def _remove(path: str) -> None:
    """Removes whatever is at ``path`` (a symlink is unlinked, never followed)."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)


# --- bounded disk use -----------------------------------------------------------------------


def _evict(root: str, *, keep: str, max_bytes: int) -> None:
    now = time.time()
    entries = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        with contextlib.suppress(OSError):
            if name.startswith(_STAGING_PREFIX) and _owned_dir(path) \
                    and now - os.lstat(path).st_mtime > _STALE_STAGING_SECS:
                shutil.rmtree(path, ignore_errors=True)  # left by a killed process
            elif _ENTRY.match(name) and name != keep and _owned_dir(path):
                entries.append((os.lstat(path).st_mtime, name, _size(path)))
    source = keep.split("-")[0]
    superseded = [e for e in entries if e[1].startswith(source + "-")]
    for _, name, _ in superseded:
        _remove_unused(root, name)
    others = sorted(e for e in entries if e not in superseded)  # least recently used first
    total = _size(os.path.join(root, keep)) + sum(size for *_, size in others)
    for _, name, size in others:
        if total <= max_bytes:
            break
        if _remove_unused(root, name):
            total -= size


def _remove_unused(root: str, name: str) -> bool:
    """Removes copy ``name`` if no process holds it; True if it is gone."""
    lock = _open_lock(os.path.join(root, name + ".lock"))
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # being copied or loaded
        _remove(os.path.join(root, name))
        return True
    finally:
        os.close(lock)


def _size(path: str) -> int:
    return sum(os.lstat(os.path.join(folder, name)).st_size
               for folder, _, names in os.walk(path) for name in names)
