"""``Limiter``: the requests a worker process has in flight, and throttling.

At most ``EndpointSpec.max_in_flight`` requests are in flight per worker process, all
DoFn threads together. When the server answers 429 / RESOURCE_EXHAUSTED the limiter waits
``Retry-After`` (else a doubling backoff, at most ``MAX_THROTTLE_SECS``) before the next
request and halves the in-flight limit, which grows back by one every ``RECOVER_SECS``
without a throttle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: The longest wait a Retry-After may impose, and how long the in-flight limit stays
#: lowered before it grows back by one.
MAX_THROTTLE_SECS = 60.0
RECOVER_SECS = 10.0


class Limiter:
    """Requests in flight per worker process, lowered while the server throttles.

    The decisions are pure functions of the clock (``wait_secs``, ``throttle``,
    ``release``), so they are tested without sleeping.
    """

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic,
                 recover_secs: float = RECOVER_SECS, max_wait_secs: float = MAX_THROTTLE_SECS):
        self.max_limit = limit
        self.limit = limit
        self.in_flight = 0
        self.not_before = 0.0
        self.throttles = 0  # in a row, for the backoff without Retry-After
        self.last_throttle = float("-inf")
        self._clock = clock
        self._recover = recover_secs
        self._max_wait = max_wait_secs
        self._cond = threading.Condition()

    @property
    def throttled(self) -> bool:
        return self.limit < self.max_limit or self.not_before > self._clock()

    def wait_secs(self, now: float) -> float | None:
        """How long a request must wait now (0: go); None: wait for a slot."""
        if now < self.not_before:
            return self.not_before - now
        return 0.0 if self.in_flight < self.limit else None

    def acquire(self) -> float:
        """Waits for a slot; returns the seconds waited while throttled."""
        start = self._clock()
        throttled = False
        with self._cond:
            while True:
                throttled = throttled or self.throttled
                wait = self.wait_secs(self._clock())
                if wait == 0.0:
                    break
                self._cond.wait(wait if wait is not None else 1.0)
            self.in_flight += 1
        return self._clock() - start if throttled else 0.0

    def release(self, ok: bool) -> None:
        with self._cond:
            self.in_flight -= 1
            now = self._clock()
            if ok:
                self.throttles = 0
                if self.limit < self.max_limit and now - self.last_throttle >= self._recover:
                    self.limit += 1
                    self.last_throttle = now  # one more per recovery period
            self._cond.notify_all()

    def throttle(self, retry_after_secs: float | None) -> float:
        """The server said slow down: wait before the next request, halve the limit.

        Returns the wait imposed (``Retry-After`` if given, else 0.5 s doubling per
        throttle in a row; at most ``max_wait_secs``).
        """
        with self._cond:
            now = self._clock()
            self.throttles += 1
            wait = retry_after_secs if retry_after_secs is not None \
                else 0.5 * 2 ** (self.throttles - 1)
            wait = max(0.0, min(wait, self._max_wait))
            self.not_before = max(self.not_before, now + wait)
            self.limit = max(1, self.limit // 2)
            self.last_throttle = now
            self._cond.notify_all()
            return wait
