"""This user's private directory in the shared temp directory, made and checked safely.

The temp directory is shared and world-writable, so a name there may already be taken by
someone else: a symlink to elsewhere, or a directory another user can write. beam_infer
keeps its machine-wide files (model copies, the GPU claim counter) under
``<temp dir>/beam_infer-<uid>``, created with mode 0700 and used only while it is a real
directory owned by this user; files in it are opened without following symlinks.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile


def user_directory() -> str:
    """``<temp dir>/beam_infer-<uid>``; see ``check`` before using it."""
    return os.path.join(tempfile.gettempdir(), f"beam_infer-{os.getuid()}")


def make_private(path: str) -> str | None:
    """Creates ``path`` (mode 0700) if absent; None if it is usable, else what is wrong.

    Usable: a directory (not a symlink) owned by this user; group and other permission
    bits are cleared if set.
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    try:
        info = os.lstat(path)
    except OSError as e:
        return f"cannot be used ({type(e).__name__}: {e})"
    if stat.S_ISLNK(info.st_mode):
        return f"is a symlink ({path!r})"
    if not stat.S_ISDIR(info.st_mode):
        return f"is not a directory ({path!r})"
    if info.st_uid != os.getuid():
        return f"is owned by uid {info.st_uid}, not this user ({os.getuid()}) ({path!r})"
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours: no one else may plant files in it
    return None


def open_private_file(path: str, flags: int = os.O_RDWR) -> int:
    """Opens (creating, mode 0600) a file without following a symlink at ``path``."""
    return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
