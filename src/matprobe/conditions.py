"""Training conditions of a MAT study and their display names.

A leaf module: the pipeline writes these names into a run's results.csv and run.json, and
the report reads them back; neither imports the other for them.
"""

from __future__ import annotations

import re

# CrossMed §III/§V configurations (Related, Unrelated, zero-overlap), leave-one-triplet-out, and the
# single-factor ablations of §VI-E (Table VIII; their names are Table IX's rows)
CONDITION_NAMES = {"related": "Related", "unrelated": "Unrelated", "zero-overlap": "Zero-overlap",
                   "any-overlap": "Any-overlap", "leave-one-out": "Leave-one-out", "without-modality": "Without Modality",
                   "without-anatomy": "Without Anatomy", "without-task": "Without Task"}


def condition_name(key: str) -> str:
    """'related' -> 'Related'; a name that is not a known key is returned as it is."""
    return CONDITION_NAMES.get(key, key)


# CrossMed's ablations as run names spell them besides 'without-task': wo_task, w-o-anatomy,
# no_modality, without_mod (read after `_` became `-`)
_ABLATION = re.compile(r"(?<![a-z])(?:without|wo|w-o|no)-?(modality|mod|anatomy|anat|ana|task)(?![a-z])")
_FACTOR_WORD = {"mod": "modality", "anat": "anatomy", "ana": "anatomy"}


def named_condition(text: str) -> str | None:
    """The condition key a path's name contains ('unrelated' is not read as 'related'), given in
    lower case with `_` and spaces as `-`; a name of two words with or without its hyphen
    ('zero-overlap', 'zerooverlap'); an ablation also as `wo-task`, `no-anatomy`, `without-mod`.
    None where it names none or several.

    >>> named_condition("ckpts/unrelated-s0"), named_condition("wo-task-seed1")
    ('unrelated', 'without-task')
    """
    found = {c for c in CONDITION_NAMES
             if re.search(r"(?<![a-z])" + r"-?".join(map(re.escape, c.split("-"))) + r"(?![a-z])", text)}
    found |= {f"without-{_FACTOR_WORD.get(w, w)}" for w in _ABLATION.findall(text)}
    return found.pop() if len(found) == 1 else None


def condition_display_name(name: str) -> str | None:
    """The display name of a condition written another way as a whole ('related', 'zero_overlap',
    'Leave one out', 'wo_task', 'WITHOUT-TASK'), or None where `name` is not one of them (a name of
    the user's own, or one with more words: 'related (r = 8)' is not Related).

    >>> condition_display_name("zero_overlap"), condition_display_name("wo task"), condition_display_name("Mine")
    ('Zero-overlap', 'Without Task', None)
    """
    text = re.sub(r"[_\s.]+", "-", str(name).strip().lower()).strip("-")
    key = named_condition(text)
    if key is None:
        return None
    spelled = {key, key.replace("-", "")}
    if text in spelled or (key.startswith("without-") and _ABLATION.fullmatch(text)):
        return CONDITION_NAMES[key]
    return None
