"""Information units. Everything is computed in nats; bits are a presentation choice."""

from __future__ import annotations

import math

NATS = "nats"
BITS = "bits"
LN2 = math.log(2.0)


def check_unit(unit: str) -> str:
    if unit not in (NATS, BITS):
        from matprobe.errors import UnitError

        raise UnitError(f"--unit {unit!r}: unknown information unit; use nats or bits")
    return unit


def from_nats(value: float, unit: str = NATS) -> float:
    """Convert a quantity in nats to `unit`."""
    return value / LN2 if check_unit(unit) == BITS else value


def to_nats(value: float, unit: str = NATS) -> float:
    """Convert a quantity in `unit` to nats."""
    return value * LN2 if check_unit(unit) == BITS else value
