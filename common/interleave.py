"""Timing several measurements side by side: one call of each per round, the order rotated every round.

On a shared 2-core VM the same measurement drifted by up to 30 % within minutes, so measurements timed one
after another also hold whatever the machine did in between. Interleaved, a slow phase falls on every side
alike and a steady drift favours none (``benchmark.py``'s rows of one model and batch size,
``speed_ratio.py``'s pairs).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence


def _nothing() -> None:
    return None


@dataclass
class Side:
    """One measurement: ``call`` (timed) after ``prepare`` (untimed, before every call: e.g. a model put in eval
    or train mode). ``interleaved`` fills ``times`` (seconds), ``value`` (the
    last call's result) and ``error`` (the exception that took the side out; set beforehand: never called)."""

    call: Callable[[], object]
    prepare: Callable[[], object] = _nothing
    times: list[float] = field(default_factory=list)
    value: object = None
    error: Exception | None = None

    def __call__(self) -> object:
        """One untimed call, prepared (a check outside the rounds); raises the side's error."""
        if self.error is not None:
            raise self.error
        self.prepare()
        return self.call()


def failed(error: Exception) -> Side:
    """A side that could not be made: kept out of the rounds, reported with ``error``."""
    return Side(_nothing, error=error)


def made(make: Callable[[], Side]) -> Side:
    """``make()``, or a :func:`failed` side with the exception it raised."""
    try:
        return make()
    except Exception as exc:  # noqa: BLE001  (reported with the side)
        return failed(exc)


def _call(side: Side, timed: bool, settle_s: float) -> None:
    if side.error is not None:
        return
    try:
        side.prepare()
        if timed:
            time.sleep(settle_s)
        start = time.perf_counter()
        side.value = side.call()
        if timed:
            side.times.append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001  (the side's result: the others go on)
        side.error = exc


def interleaved(sides: Sequence[Side], warmup: int, rounds: int, settle_s: float = 0.0) -> Sequence[Side]:
    """``warmup`` untimed calls of each side, then ``rounds`` rounds of one timed call of each, round r in the
    order r, r + 1, ... (mod the number of sides: two sides alternate which goes first). ``settle_s``: a pause
    before each timed call (an OpenMP runtime the previous call left spinning would take cores from it). A side
    whose call raises leaves the rounds with ``error`` set. Returns ``sides``."""
    for _ in range(warmup):
        for side in sides:
            _call(side, False, settle_s)
    for r in range(rounds):
        for i in range(len(sides)):
            _call(sides[(r + i) % len(sides)], True, settle_s)
    return sides


def round_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Each round's ``num`` time over its ``den`` time: sides of one :func:`interleaved` measurement, where a
    slow phase of the machine falls on both alike."""
    return [n / d for n, d in zip(num, den, strict=True)]
