"""``RowCache``: outputs of rows a failed call was answered for, until a call takes them.

When a call fails after some of its requests were answered (or a request sent ahead is
taken by no call, see ``_send_ahead``), those rows' outputs are kept here, keyed by
``row_keys`` (the signature names and the row's feeds), and the next call holding the
same rows (a retry, an isolation call) takes them instead of sending them again.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: Rows whose outputs a worker keeps (see ``RowCache``), and for how long.
CACHE_ROWS = 100_000
CACHE_TTL_SECS = 600.0


class RowCache:
    """Outputs of rows a failed call got answers for, until a retry asks for them again.

    Keyed by the group's signature names and the row's feeds (a digest of their bytes);
    an entry is taken when used, so a row is served from here at most as often as it
    was answered. Bounded by ``max_rows`` (oldest first out) and ``ttl_secs``.
    """

    def __init__(self, max_rows: int = CACHE_ROWS, ttl_secs: float = CACHE_TTL_SECS,
                 clock: Callable[[], float] = time.monotonic):
        self._entries: collections.OrderedDict[bytes, list] = collections.OrderedDict()
        self._max = max_rows
        self._ttl = ttl_secs
        self._clock = clock
        self._lock = threading.Lock()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def put(self, key: bytes, outputs: list[dict[str, np.ndarray]]) -> None:
        with self._lock:
            self._entries.setdefault(key, []).append((self._clock(), outputs))
            self._entries.move_to_end(key)
            self._size += 1
            while self._size > self._max:
                _, stored = self._entries.popitem(last=False)
                self._size -= len(stored)

    def take(self, key: bytes) -> list[dict[str, np.ndarray]] | None:
        with self._lock:
            stored = self._entries.get(key)
            now = self._clock()
            while stored:
                at, outputs = stored.pop(0)
                self._size -= 1
                if now - at <= self._ttl:
                    if not stored:
                        del self._entries[key]
                    return outputs
            if stored is not None:
                del self._entries[key]
            return None


def row_keys(names: Sequence[str], calls: Sequence[tuple[str, Mapping[str, Any]]],
             n: int) -> list[bytes]:
    """One digest per row of a group's calls (signature names and every feed's row)."""
    digests = [hashlib.blake2b(("\0".join(names)).encode(), digest_size=16) for _ in range(n)]
    for _, feeds in calls:
        for alias in sorted(feeds):
            array = np.asarray(feeds[alias])
            tag = f"{alias}:{array.dtype.str}:{array.shape[1:]}".encode()
            for i in range(n):
                digest = digests[i]
                digest.update(tag)
                row = array[i]
                if array.dtype.kind == "O":
                    for item in np.asarray(row, dtype=object).ravel().tolist():
                        data = item if isinstance(item, bytes) else str(item).encode()
                        digest.update(len(data).to_bytes(8, "little"))
                        digest.update(data)
                else:
                    digest.update(np.ascontiguousarray(row).tobytes())
    return [d.digest() for d in digests]
