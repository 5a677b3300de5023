"""The model of a connection's time limits that the server is checked against: a stream of
whole frames cut into chunks at random places, each chunk after a random pause, and when the
model closes the connection (idle timeout after a whole message, request timeout from a
message's first byte, the clock of a message begun with the end of another starting then)."""

from __future__ import annotations

import random

REQUEST_TIMEOUT = 2.25
IDLE_TIMEOUT = 3.75
SCHEDULES = 150
# Pauses are whole halves of a second and the timeouts end in a quarter: no chunk arrives
# on the instant a limit ends.
PAUSES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5)


def schedule_of(rng: random.Random, frame: int) -> list[tuple[float, int]]:
    """(pause before it, size) of each chunk of a stream of whole frames."""
    total = frame * rng.randint(1, 6)
    cuts = sorted(rng.sample(range(1, total), rng.randint(0, min(8, total - 1))))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    return [(rng.choice(PAUSES), size) for size in sizes]


def closes_at(schedule: list[tuple[float, int]], frame: int) -> float:
    """When the model closes the connection, from its opening at 0."""
    return model_close(schedule, frame)[0]


def model_close(schedule: list[tuple[float, int]], frame: int) -> tuple[float, bool]:
    """When the model closes the connection, and whether part of a message was in then (the
    request timeout closed it) or not (the idle timeout)."""
    now, received = 0.0, 0
    deadline = IDLE_TIMEOUT
    partial_since: float | None = None
    for pause, size in schedule:
        now += pause
        if now >= deadline:
            return deadline, partial_since is not None
        whole_before = received // frame
        received += size
        decoded = received // frame > whole_before
        if received % frame == 0:
            partial_since, deadline = None, now + IDLE_TIMEOUT
        elif partial_since is None or decoded:
            partial_since, deadline = now, now + REQUEST_TIMEOUT
    return deadline, partial_since is not None
