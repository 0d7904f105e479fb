"""A sweep's compiled steps kept a few ahead of the device, with progress counted as they finish.

JAX dispatches asynchronously: a loop that only dispatches queues a whole sweep in about a second,
so a progress bar would count masks sent rather than masks computed, and an interrupted process
would first wait for the whole queue. ``StepQueue`` waits for step i - depth to finish before
step i + 1 is dispatched: the device always has the next step queued (no idle gap between steps),
and at most ``depth`` + 1 steps are unfinished at any time.
"""

from __future__ import annotations

import collections
from typing import Callable

import jax

# Two queued steps keep the device busy while the host dispatches the next one.
DEPTH = 2


class StepQueue:
    """Dispatched steps not yet known to be finished, oldest first.

    ``push(output, n)`` after dispatching a step: ``output`` is an array that step computed (ready
    when the step has finished; a small one, nothing is copied to the host) and ``n`` its masks,
    given to ``progress`` once the step has finished. ``drain()`` waits for every pushed step.
    """

    def __init__(self, progress: Callable[[int], None] | None = None, depth: int = DEPTH):
        self._progress = progress
        self._depth = depth
        self._pending: collections.deque[tuple[jax.Array, int]] = collections.deque()

    def push(self, output: jax.Array, n: int) -> None:
        self._pending.append((output, n))
        while len(self._pending) > self._depth:
            self._finish_oldest()

    def drain(self) -> None:
        while self._pending:
            self._finish_oldest()

    def _finish_oldest(self) -> None:
        output, n = self._pending.popleft()
        output.block_until_ready()
        if self._progress:
            self._progress(n)
