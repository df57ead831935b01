"""The MAT factor names and their one-letter aliases: a leaf module (it imports nothing), so that
argument checks (`matprobe.checks`) can read the aliases without initialising the data package."""

from __future__ import annotations

FACTORS = ("modality", "anatomy", "task")
FACTOR_ALIASES = {"M": "modality", "A": "anatomy", "T": "task", "Y": "label"}
FACTOR_SHORT = {v: k for k, v in FACTOR_ALIASES.items()}
