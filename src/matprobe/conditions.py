"""Training conditions of a MAT study and their display names.

A leaf module: the pipeline writes these names into a run's results.csv and run.json, and
the report reads them back; neither imports the other for them.
"""

from __future__ import annotations

# CrossMed §III/§V configurations (Related, Unrelated, zero-overlap), leave-one-triplet-out, and the
# single-factor ablations of §VI-E (Table VIII; their names are Table IX's rows)
CONDITION_NAMES = {"related": "Related", "unrelated": "Unrelated", "zero-overlap": "Zero-overlap",
                   "leave-one-out": "Leave-one-out", "without-modality": "Without Modality",
                   "without-anatomy": "Without Anatomy", "without-task": "Without Task"}


def condition_name(key: str) -> str:
    """'related' -> 'Related'; a name that is not a known key is returned as it is."""
    return CONDITION_NAMES.get(key, key)
