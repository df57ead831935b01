"""Designs the data cannot answer: factors fixed by others or by the source data set, strata
with one answer class.

A chain term I(Z;A|M) asks how much anatomy Z carries beyond modality. When every modality
has a single anatomy (H(A|M) = 0, computed exactly by `data.entropy`), the term is 0 whatever
Z holds: the data cannot tell anatomy from modality, so the term is not identifiable (and a
report must not state 0 as a finding). Likewise a (modality, anatomy, task) stratum whose items
all share one answer has H(Y|stratum) = 0: its I(Z;Y) is 0 by construction and its accuracy
measures how often the model says that answer. And when every source data set holds one
modality (a manifest's `source` column; Med-MAT's data-no), I(Z;M) cannot tell modality from the
data set's identity. `data validate` and the report list them. Of a model's answers: a checkpoint
that gives one option for nearly every item (`top_option`, `answers_one_option`) has an accuracy
that is that option's share of the correct answers; the report and `relate` say so in one sentence
(`one_option_sentence`).
"""

from __future__ import annotations

import numpy as np

from matprobe.data.entropy import conditional_entropy, entropy, joint_codes
from matprobe.data.model import FACTOR_SHORT, FACTORS, resolve_factor
from matprobe.errors import DataError

# conditional entropies at or below this are 0 (exact plug-in values are sums of p log p)
ZERO = 1e-12
# a checkpoint answering one option for at least this share of its items is flagged (the report's
# design warnings and `relate`'s notes)
ONE_OPTION_SHARE = 0.9
# options are named by letter, A first (an index past Z by its number)
OPTION_NAMES = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# fewer answers than this say nothing of a checkpoint's favourite option
MIN_ANSWERS_FOR_TOP = 10


def top_option(pred) -> dict | None:
    """The option a checkpoint answers most, {"option" (its letter), "count", "answered"} over the
    items with an answer (`pred` >= 0, option indices as a store's answers/pred); None where fewer
    than MIN_ANSWERS_FOR_TOP items have one.

    >>> top_option([0, 2, 2, 2, 2, 2, 2, 2, 2, 2, -1])
    {'option': 'C', 'count': 9, 'answered': 10}
    """
    pred = np.asarray(pred)
    pred = pred[pred >= 0]
    if pred.size < MIN_ANSWERS_FOR_TOP:
        return None
    values, counts = np.unique(pred, return_counts=True)
    top = int(np.argmax(counts))
    v = int(values[top])
    letter = OPTION_NAMES[v] if 0 <= v < len(OPTION_NAMES) else str(values[top])
    return {"option": letter, "count": int(counts[top]), "answered": int(pred.size)}


def answers_one_option(record: dict | None) -> bool:
    """Whether a `top_option` record is one option for ONE_OPTION_SHARE or more of the answered items."""
    return bool(record) and record["count"] / record["answered"] >= ONE_OPTION_SHARE


def one_option_sentence(name: str, letter: str, count: int, total: int) -> str:
    """The warning for a checkpoint that answers one option for nearly every item."""
    return (f"checkpoint {name} answers option {letter} for {count} of {total} items ({count / total:.0%}): its "
            f"accuracy is the share of items whose answer is {letter}, not evidence that it reads the images")


def _short(name: str) -> str:
    return FACTOR_SHORT.get(name, name)


def single_class_factors(dataset, factors) -> dict[str, str]:
    """{factor: its one class} for each of `factors` that has a single class over the data set's
    samples (a study of one task, say): its chain term is 0 by definition and the MI step refuses
    it, so `init` leaves it out of [mi] factors and `run` refuses it before extracting. A factor
    the data set lacks is left to the caller's own check.

    >>> from matprobe.data.model import MATDataset, Sample
    >>> ds = MATDataset([Sample(id=str(i), image="x.png", question="q", options=("a", "b"), answer_index=i % 2,
    ...                         modality=["CT", "MRI"][i % 2], anatomy="Brain", task="Diagnosis")
    ...                  for i in range(4)])
    >>> single_class_factors(ds, ["modality", "anatomy", "task"])
    {'anatomy': 'Brain', 'task': 'Diagnosis'}
    """
    out = {}
    for name in factors:
        try:
            codes = dataset.codes(name)
        except DataError:
            continue
        if len(codes) and np.unique(codes).size < 2:
            out[name] = str(dataset.vocabularies[resolve_factor(name)].labels[int(codes[0])])
    return out


def constant_factors(frame, factors=FACTORS) -> frozenset:
    """The `factors` (columns of a samples frame, e.g. a store's) with one value over its rows: a
    chain leaves such a factor out (`single_class_factors`), and its strata given the others are
    the strata given all of them."""
    return frozenset(f for f in factors if f in frame and frame[f].nunique() == 1)


def stratum_key(given, constant=frozenset()) -> tuple:
    """A stratum's key ({factor: label}, factor names or aliases) or a conditioning set's (factor
    names), sorted, without the factors in `constant` (`constant_factors`): a factor with one value
    over the rows splits nothing, so the strata given M, A are those given M, A, T in a study of one
    task.

    >>> stratum_key({"T": "Diagnosis", "modality": "CT", "A": "Liver"}, frozenset({"task"}))
    (('anatomy', 'Liver'), ('modality', 'CT'))
    """
    if isinstance(given, dict):
        return tuple(sorted((f, str(v)) for k, v in given.items() if (f := resolve_factor(k)) not in constant))
    return tuple(sorted(f for g in given or () if (f := resolve_factor(g)) not in constant))


def fixed_factor_warnings(columns: dict[str, list], order: list[str] | None = None) -> list[str]:
    """For the chain order (default modality, anatomy, task, label when present): each factor fixed
    by the ones before it (H(F|before) = 0 while H(F) > 0), or with a single class."""
    order = [f for f in (order or [*FACTORS, "label"]) if f in columns]
    out = []
    for j, name in enumerate(order):
        col = columns[name]
        if entropy(col) <= ZERO:
            label = next(iter(col), "")
            out.append(f"{name} has one class ({label!r}): every MI term with {name} as the target is 0 by "
                       f"construction; drop {name} from the factors or add samples of other {name} classes")
            continue
        given = order[:j]
        if not given:
            continue
        h = conditional_entropy(col, joint_codes([columns[g] for g in given]))
        if h <= ZERO:
            g_short = ",".join(_short(g) for g in given)
            out.append(f"{name} is fixed by {', '.join(given)} (H({_short(name)}|{g_short}) = 0): "
                       f"I(Z;{_short(name)}|{g_short}) is not identifiable on this data, the design cannot "
                       f"separate {name} from {', '.join(given)}; add samples where {name} varies within "
                       f"each {' x '.join(given)} group")
    return out


def one_answer_strata(samples, limit: int = 5) -> list[str]:
    """Strata (modality, anatomy, task) whose items all have the same answer (label)."""
    answers: dict[tuple, dict[str, int]] = {}
    for s in samples:
        answers.setdefault(s.triplet, {}).setdefault(s.label, 0)
        answers[s.triplet][s.label] += 1
    single = [(t, next(iter(a)), sum(a.values())) for t, a in answers.items() if len(a) == 1]
    if not single:
        return []
    shown = "; ".join(f"{'/'.join(t)} (all {n} items answer {lab!r})" for t, lab, n in single[:limit])
    more = f"; and {len(single) - limit} more" if len(single) > limit else ""
    return [f"{len(single)} of {len(answers)} strata have one answer class: {shown}{more}. There H(Y|stratum) "
            "= 0, so I(Z;Y) is 0 by construction and accuracy only measures how often the model gives that "
            "answer; add items with other answers to those strata"]


def source_warnings(columns: dict[str, list], factors=FACTORS) -> list[str]:
    """Factors fixed by the source data set (H(F|source) = 0 with two or more sources): then I(Z;F)
    measures the data set's identity (scanner, site, preprocessing) as much as F itself."""
    src = columns.get("source")
    if src is None or any(v is None for v in src) or len(set(src)) < 2:
        return []
    out = []
    for name in factors:
        col = columns.get(name)
        if col is None or entropy(col) <= ZERO:
            continue
        if conditional_entropy(col, joint_codes([src])) <= ZERO:
            f = _short(name)
            out.append(f"{name} is fixed by the source data set (H({f}|source) = 0 over {len(set(src))} sources): "
                       f"every source holds one {name}, so I(Z;{f}) measures the source's identity (scanner, site, "
                       f"preprocessing) as much as {name}. Separate them with `matprobe mi STORE --factors "
                       f"{f},source` (I(Z;source|{f})); I(Z;{f}|source) is not identifiable on this data: add "
                       f"sources that hold several {name} values")
    return out


def design_warnings(samples) -> list[str]:
    """The checks on a list of samples (a MATDataset or its .samples): factors fixed by others or
    by the source data set, and strata with one answer."""
    samples = list(samples)
    if not samples:
        return []
    columns = {f: [getattr(s, f) for s in samples] for f in FACTORS}
    labels = [s.label for s in samples]
    if any(lab is not None for lab in labels):
        columns["label"] = labels
    sources = [getattr(s, "source", None) for s in samples]
    return (fixed_factor_warnings(columns) + source_warnings({**columns, "source": sources})
            + one_answer_strata(samples))
