"""Fano and PAC bound calculators for the Python API (`matprobe.bounds.fano`, `.pac`)."""

from __future__ import annotations

from matprobe.theory.fano import FanoBounds
from matprobe.theory.fano import fano_report as fano
from matprobe.theory.pac import PacBounds
from matprobe.theory.pac import pac_report as pac

__all__ = ["FanoBounds", "PacBounds", "fano", "pac"]
