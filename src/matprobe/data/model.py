"""The MAT data model: samples tagged with Modality, Anatomy and Task, and factor vocabularies.

A `Sample` is one four-option (or K-option) VQA item. `MATDataset` holds samples with
stable integer codes for every factor: codes follow the sorted order of the label
strings, so the same set of labels always gets the same codes, whatever the file order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported where it is used: loading a manifest stays light
    import pandas as pd

from matprobe.errors import DataError
from matprobe.factors import FACTOR_ALIASES, FACTOR_SHORT, FACTORS  # noqa: F401 (re-exported)

# Canonical spellings; keys are lower-cased with spaces, '-' and '_' removed.
_CANONICAL = {
    "modality": {
        "xray": "X-ray", "x-ray": "X-ray", "cr": "X-ray", "dx": "X-ray", "radiograph": "X-ray",
        "ct": "CT", "computedtomography": "CT",
        "mri": "MRI", "mr": "MRI", "magneticresonance": "MRI", "magneticresonanceimaging": "MRI",
        "us": "Ultrasound", "ultrasound": "Ultrasound", "ultrasonography": "Ultrasound",
        "fundus": "Fundus", "fundusphotography": "Fundus", "cfp": "Fundus",
        "oct": "OCT", "opticalcoherencetomography": "OCT",
        "microscopy": "Microscopy", "pathology": "Pathology", "histopathology": "Pathology",
        "dermoscopy": "Dermoscopy", "endoscopy": "Endoscopy", "pet": "PET",
        # Med-MAT Table 9 abbreviations (Cai et al. 2025, Table 9 caption): Co, Der, DP, End,
        # FP, Mic. The appendix prose says Colonoscopy / Digital Pathology for Co / DP; the
        # caption (cervix and mouth images) says Colposcopy / Digital Photography: we follow it.
        "co": "Colposcopy", "colposcopy": "Colposcopy",
        "dp": "Digital Photography", "digitalphotography": "Digital Photography",
        "fp": "Fundus", "der": "Dermoscopy", "end": "Endoscopy",
        "mic": "Microscopy", "microscopyimages": "Microscopy",
    },
}


def canonical_label(factor: str, value: str) -> str:
    """Normalise a label's spelling (X-Ray/X-ray/xray -> X-ray, US -> Ultrasound).

    Unknown labels keep their own spelling with surrounding whitespace removed (runs of spaces
    made one); an anatomy or task label of more than 3 letters written all in lower case is
    title-cased ("lung" -> "Lung"). Upper case is kept, as acronyms are written ("COVID", not
    "Covid"). Every command reads data labels and targets by this one rule (`SPELLING_RULE`).

    >>> canonical_label("task", "COVID"), canonical_label("anatomy", "lung"), canonical_label("modality", "US")
    ('COVID', 'Lung', 'Ultrasound')
    """
    text = " ".join(str(value).split())
    key = text.lower().replace(" ", "").replace("_", "")
    table = _CANONICAL.get(factor, {})
    if key in table:
        return table[key]
    if key.replace("-", "") in table:
        return table[key.replace("-", "")]
    # not upper case: "COVID" and "CHEST" cannot be told apart, and an acronym title-cased is a
    # misspelling ("Covid" in every report of a study whose data say "COVID")
    if factor in ("anatomy", "task") and text.islower() and len(text) > 3:
        return text.title()
    return text


# the rule of `canonical_label` in words, for messages and help that say how labels are read
SPELLING_RULE = ("known modality names in their canonical form, e.g. X-ray, Ultrasound; an anatomy or task "
                 "written all in lower case, title-cased; any other label as written, so acronyms stay "
                 "(COVID)")


def resolve_factor(name: str) -> str:
    """'M' -> 'modality' etc.; other names pass through (any label column can be a factor)."""
    return FACTOR_ALIASES.get(name, name)


def check_id(sample_id: str, where: str) -> str:
    """An id must be printable text: a NUL or other control character cannot be stored as an
    HDF5 string (extract would fail after loading the model) nor printed on one error line."""
    bad = [i for i, ch in enumerate(str(sample_id)) if ord(ch) < 32 or ord(ch) == 127]
    if bad:
        raise DataError(f"{where}: id {str(sample_id)!r} contains a control character "
                        f"({str(sample_id)[bad[0]]!r} at position {bad[0]}); ids are stored as text, "
                        "so remove it from the id")
    return sample_id


@dataclass(frozen=True)
class Sample:
    """One MAT-tagged VQA item.

    `image` is a path (relative paths are resolved against the data file's folder);
    NIfTI volumes take `slice_index`. `answer_index` indexes `options`.
    """

    id: str
    image: str | None
    question: str
    options: tuple[str, ...]
    answer_index: int | None
    modality: str
    anatomy: str
    task: str
    label: str | None = None
    subset: str | None = None
    split: str | None = None
    mask: str | None = None
    slice_index: int | None = None
    # Segmentation items (CrossMed §III): one candidate mask per option; `mask` is then the
    # ground truth when it differs from the correct candidate (data/masks.py).
    option_masks: tuple[str, ...] | None = None
    # the data set the item came from (Med-MAT's data-no table names it): in CrossMed and Med-MAT
    # each (modality, anatomy) pair often comes from one or two source data sets, so a factor can
    # be fixed by the source (data/design.py flags it)
    source: str | None = None

    @property
    def is_segmentation(self) -> bool:
        return bool(self.option_masks)

    @property
    def triplet(self) -> tuple[str, str, str]:
        return (self.modality, self.anatomy, self.task)

    @property
    def answer(self) -> str | None:
        if self.answer_index is None:
            return None
        return self.options[self.answer_index]

    def to_record(self) -> dict:
        rec = asdict(self)
        rec["options"] = list(self.options)
        rec["option_masks"] = list(self.option_masks) if self.option_masks else None
        return rec


SAMPLE_FIELDS = tuple(f.name for f in fields(Sample))
OPTION_LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass
class Vocabulary:
    """Labels of one factor with stable integer codes (sorted label order)."""

    name: str
    labels: tuple[str, ...]

    @classmethod
    def from_values(cls, name: str, values: Iterable[str | None]) -> Vocabulary:
        return cls(name, tuple(sorted({v for v in values if v is not None})))

    def code(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise DataError(
                f"unknown {self.name} label {label!r}; known: {', '.join(self.labels)}"
            ) from None

    def encode(self, values: Sequence[str | None]) -> np.ndarray:
        index = {lab: i for i, lab in enumerate(self.labels)}
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            if v is None:
                out[i] = -1
            elif v in index:
                out[i] = index[v]
            else:
                raise DataError(f"unknown {self.name} label {v!r}; known: {', '.join(self.labels)}")
        return out

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class MATDataset:
    """An ordered collection of samples with factor vocabularies.

    `source` names the file the samples came from (used in error messages).
    """

    samples: list[Sample]
    source: str = "<memory>"
    vocabularies: dict[str, Vocabulary] = field(default_factory=dict)

    def __post_init__(self) -> None:
        seen: dict[str, int] = {}
        for i, s in enumerate(self.samples):
            if s.id in seen:
                raise DataError(  # records count from 1, as a person reads the file
                    f"{self.source}: record {i + 1} has duplicate id {s.id!r} (first at record "
                    f"{seen[s.id] + 1}); make ids unique"
                )
            seen[s.id] = i
        for name in (*FACTORS, "label", "subset", "split"):
            if name not in self.vocabularies:
                self.vocabularies[name] = Vocabulary.from_values(
                    name, (getattr(s, name) for s in self.samples)
                )

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def codes(self, factor: str) -> np.ndarray:
        """Integer codes of a factor ('M', 'modality', 'label', ...) for every sample."""
        name = resolve_factor(factor)
        if name not in self.vocabularies:
            raise DataError(f"{self.source}: no factor {factor!r}; have {', '.join(self.vocabularies)}")
        return self.vocabularies[name].encode([getattr(s, name) for s in self.samples])

    def triplets(self) -> pd.Series:
        """Counts per (modality, anatomy, task) triplet, largest first."""
        frame = self.frame()
        return frame.groupby(list(FACTORS)).size().sort_values(ascending=False)

    def frame(self) -> pd.DataFrame:
        """One row per sample; options as a list column."""
        import pandas as pd  # lazily: loading a manifest stays light
        return pd.DataFrame([s.to_record() for s in self.samples], columns=list(SAMPLE_FIELDS))

    def subset(self, keep: Sequence[bool] | np.ndarray, source: str | None = None) -> MATDataset:
        """Samples where `keep` is true, with the parent's vocabularies (codes stay stable)."""
        kept = [s for s, k in zip(self.samples, keep) if k]
        return MATDataset(kept, source or self.source, dict(self.vocabularies))
