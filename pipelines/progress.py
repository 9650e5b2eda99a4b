"""Progress lines for long batch runs: elements done, the rate and, if known, time left.

``Progress`` prints one line every ``every_secs`` from a background thread of the process
that launched the job, e.g.::

    progress: 120,000 of 1,000,000 elements (12.0%), 2,400.0 elements/s, about 6 min 7 s left
    progress: 120,000 elements, 2,400.0 elements/s (input size unknown)

It counts the elements that ended scored or failed. Where the workers run in this process
(the DirectRunner, FnApiRunner) they call ``count_done(run_id)``, which the thread reads;
where a runner returns while the job runs (Dataflow, portable runners) the thread reads the
job's Beam metrics instead, once ``attach``-ed to its ``PipelineResult``. Lines hold counts
only, never element contents.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

_DONE: dict[str, int] = {}
_LOCK = threading.Lock()


def _counts() -> tuple[threading.Lock, dict[str, int]]:
    """The process's counts, whichever copy of this module asks.

    The jobs' code reaches workers pickled by value (``jobs.job_options``), so DoFns run
    with copies of this module's globals, also in the launching process (in-process
    runners unpickle them there). Every copy uses the module registered in
    ``sys.modules``, the one the launcher's ``Progress`` reads; a worker process without
    it counts in its own copy, and the launcher reads Beam metrics instead.
    """
    module = sys.modules.get(__name__)
    if module is None:
        return _LOCK, _DONE
    return module._LOCK, module._DONE


def count_done(run_id: str, n: int = 1) -> None:
    """Counts ``n`` elements of run ``run_id`` as done (called by the job's DoFns)."""
    lock, done = _counts()
    with lock:
        done[run_id] = done.get(run_id, 0) + n


def done_here(run_id: str) -> int:
    """Elements of ``run_id`` counted in this process so far."""
    lock, done = _counts()
    with lock:
        return done.get(run_id, 0)


def forget(run_id: str) -> None:
    lock, done = _counts()
    with lock:
        done.pop(run_id, None)


def format_line(done: int, elapsed_secs: float, expected: int | None) -> str:
    """The progress line for ``done`` elements after ``elapsed_secs``.

    Example:
        >>> format_line(500, 2.0, 1000)
        'progress: 500 of 1,000 elements (50.0%), 250.0 elements/s, about 2 s left'
    """
    rate = done / elapsed_secs if elapsed_secs > 0 else 0.0
    if expected is None:
        return f"progress: {done:,} elements, {rate:,.1f} elements/s (input size unknown)"
    share = 100.0 * done / expected if expected else 100.0
    line = f"progress: {done:,} of {expected:,} elements ({share:.1f}%), {rate:,.1f} elements/s"
    if rate > 0 and done < expected:
        line += f", about {_duration((expected - done) / rate)} left"
    return line


def _duration(secs: float) -> str:
    secs = max(1, round(secs))
    hours, rest = divmod(secs, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


class Progress:
    """Prints progress lines while a run goes on; a context manager (``with`` starts it).

    Args:
        run_id: The run whose in-process counts are read.
        every_secs: Seconds between lines; 0 or less: no lines, no thread.
        expected: The input's element count, if known (for the share and time left).
        counters: Beam counter names (namespace ``namespace``) that add up to the elements
            done, read from an attached running result.
        write: Where lines go (default ``print``, flushed).
    """

    def __init__(self, run_id: str, *, every_secs: float, expected: int | None,
                 counters: Sequence[str] = (), namespace: str = "beam_infer",
                 write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._run_id = run_id
        self._every = every_secs
        self._expected = expected
        self._counters = tuple(counters)
        self._namespace = namespace
        self._write = write or (lambda line: print(line, flush=True))
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: Any = None
        self._started = 0.0

    def __enter__(self) -> Progress:
        self._started = self._clock()
        if self._every > 0:
            self._thread = threading.Thread(target=self._loop, name="batch-scoring-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        forget(self._run_id)

    def attach(self, result: Any) -> None:
        """Reads counts from ``result``'s metrics from now on (runners that return early)."""
        self._result = result

    def done(self) -> int:
        here = done_here(self._run_id)
        if self._result is None or not self._counters:
            return here
        return max(here, self._from_metrics())

    def _from_metrics(self) -> int:
        total = 0
        try:
            for name in self._counters:
                query = self._result.metrics().query(
                    MetricsFilter().with_namespace(self._namespace).with_name(name))
                total += int(sum(c.attempted or 0 for c in query["counters"]))
        except Exception:  # noqa: BLE001 - a runner without live metrics: no progress line
            return 0
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self._write(format_line(self.done(), self._clock() - self._started,
                                    self._expected))
