"""TF Serving-style versioned model paths: discovery, completeness and version policies.

A *base path* holds numbered child directories, each a SavedModel version
(``/models/five/1``, ``/models/five/2``), as TensorFlow Serving's server core expects.
Listing uses Beam's ``FileSystems``, so base paths work on every Beam filesystem.

Completeness. TF Serving assumes a version directory appears atomically (written aside,
then renamed into the base path) and loads whatever it finds. Copies into a bucket are
not atomic, so beam_infer checks what it can see from a file listing alone:

* ``saved_model.pb`` (or ``.pbtxt``) exists and is not empty;
* either there is no ``variables/`` folder (a model without variables), or
  ``variables/variables.index`` exists and is not empty, and every data shard
  ``variables.data-IIIII-of-NNNNN`` for I in 0..N-1 exists (N read from the shard names);
A version that passes and still fails to load (corrupt bytes, or a data file still being
written) is a load failure: reported, and the serving version stays (see ``_serving``).
It is tried again only when its listing (names, sizes, modification times) changes, so a
copy that was caught mid-way is picked up once it finishes, and a corrupt one is not
reloaded at every poll.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator, Mapping

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystems import FileSystems

from beam_infer._backend import ModelVersion
from beam_infer._config import VersionPolicy
from beam_infer._errors import ModelPathError

_SHARD = re.compile(r"^variables\.data-([0-9]+)-of-([0-9]+)$")
_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def list_version_files(base_path: str) -> dict[int, dict[str, tuple[int, float]]]:
    """``{version: {relative path: (size, mtime)}}`` for every numbered child of the base.

    Built from one recursive listing, so it works on object stores whether or not the
    folders have placeholder objects (those are left out: they are not model files).
    The (size, mtime) pairs also fingerprint a version: a failed version is retried
    only when its fingerprint changes.
    """
    versions: dict[int, dict[str, tuple[int, float]]] = {}
    for version, rest, metadata in _listing(base_path):
        if rest and not rest.endswith("/"):
            versions.setdefault(version, {})[rest] = (
                metadata.size_in_bytes, metadata.last_updated_in_seconds)
    return versions


def _listing(base_path: str) -> Iterator[tuple[int, str, FileMetadata]]:
    """``(version, path below the version folder, metadata)`` for every listed object
    under a numbered child of ``base_path``; ``""`` for a folder's placeholder object.

    Names come from a bucket listing and are not trusted: objects outside the base,
    and children whose name is not a version number, are skipped.
    """
    prefix = base_path.rstrip("/") + "/"
    try:
        matches = FileSystems.match([prefix + "**"])[0].metadata_list
    except Exception:  # noqa: BLE001 - an unreadable or empty base path has no versions
        return
    local_prefix = prefix.removeprefix("file://")
    for metadata in matches:
        for known in (prefix, local_prefix):
            if metadata.path.startswith(known):
                relative = metadata.path[len(known):]
                break
        else:
            continue
        head, _, rest = relative.partition("/")
        version = version_number(head)
        if version is not None:
            yield version, rest, metadata


def version_number(name: str) -> int | None:
    """The version a child folder named ``name`` holds, or None if it is no version.

    Plain decimal numbers only, as ``version_path`` writes them (``"7"``, not ``"07"``
    or non-ASCII digits): the folder loaded is then the folder that was listed.
    """
    if name.isascii() and name.isdigit() and str(int(name)) == name:
        return int(name)
    return None


def is_complete(files: Mapping[str, tuple[int, float]]) -> bool:
    """The completeness rule of the module docstring, on one version's file listing."""
    sizes = {name: state[0] for name, state in files.items()}
    if not any(sizes.get(name, 0) > 0 for name in _MODEL_FILES):
        return False
    variables = {name[len("variables/"):] for name in sizes if name.startswith("variables/")}
    if not variables:
        return True
    if sizes.get("variables/variables.index", 0) <= 0:
        return False
    shards = [_SHARD.match(name) for name in variables]
    totals = {int(m.group(2)) for m in shards if m}
    if len(totals) != 1:
        return False
    total = totals.pop()
    present = {int(m.group(1)) for m in shards if m}
    return present == set(range(total))


def complete_versions(base_path: str) -> dict[int, dict[str, tuple[int, float]]]:
    """The complete versions under ``base_path`` with their listings."""
    return {v: files for v, files in list_version_files(base_path).items()
            if is_complete(files)}


def numeric_children(base_path: str) -> list[int]:
    """Numbered child folders of ``base_path``, empty ones included where they exist.

    On an object store a folder exists when an object lies below it or a placeholder
    object names it.
    """
    local = base_path.removeprefix("file://")
    if FileSystems.get_scheme(base_path) in (None, "file") and os.path.isdir(local):
        return sorted(v for n in os.listdir(local)
                      if (v := version_number(n)) is not None
                      and os.path.isdir(os.path.join(local, n)))
    return sorted({version for version, _, _ in _listing(base_path)})


def is_saved_model_dir(path: str) -> bool:
    """Whether ``path`` holds ``saved_model.pb`` (or ``.pbtxt``), looked up by file name,
    which works on object stores with or without folder placeholder objects."""
    return any(FileSystems.exists(posixpath.join(path, name)) for name in _MODEL_FILES)


def version_path(base_path: str, version: int) -> str:
    return posixpath.join(base_path.rstrip("/"), str(version))


def default_model_name(base_path: str) -> str:
    return posixpath.basename(base_path.rstrip("/")) or base_path


def resolve(base_path: str, policy: VersionPolicy, model_name: str | None) -> ModelVersion:
    """The version a job serves at build time: the newest complete one the policy allows.

    Raises:
        ModelPathError: no complete version is allowed; the message lists what was found.
    """
    found = set(numeric_children(base_path))
    complete = sorted(complete_versions(base_path))
    allowed = policy.allowed(complete)
    if not allowed:
        incomplete = sorted(found - set(complete))
        raise ModelPathError(
            f"no complete model version under {base_path!r} for version policy "
            f"{policy.describe()}; complete versions: "
            f"{', '.join(map(str, complete)) or 'none'}; incomplete (saved_model.pb or "
            f"variables still missing): {', '.join(map(str, incomplete)) or 'none'}. "
            "Export a SavedModel into a numbered folder such as "
            f"{version_path(base_path, (max(found) + 1) if found else 1)!r}, or point "
            "model_path at a SavedModel directory."
        )
    return ModelVersion(path=version_path(base_path, allowed[0]),
                        name=model_name or default_model_name(base_path),
                        version=allowed[0])
