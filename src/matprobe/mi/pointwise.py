"""Pointwise information summarised per stratum: which strata and which items carry a term.

A pointwise-tagged estimator returns one held-out value per item whose mean is the term's
estimate before clipping: for the default probe, log q(y|z,c) - log p(y|c), the pointwise
V-information of Ethayarajh et al. (2022) with the conditioning factors given. Grouped by the
term's conditioning stratum (by the target's class for a term without one), the group means
weighted by the groups' shares of the items add up to the term; the groups' contributions say
where the information sits, their spread whether a few items or all of them carry it. A leaf:
numpy only, no estimator and no file format (issue 25).

>>> import numpy as np
>>> values = np.array([0.5, 0.7, -0.1, 0.0, 0.2, 0.4])
>>> s = summarise_pointwise(values, np.array([0, 0, 1, 1, 2, 2]),
...                         {0: {"M": "CT"}, 1: {"M": "MRI"}, 2: {"M": "X-ray"}}, items=1)
>>> [round(g.contribution, 4) for g in s.groups]
[0.2, -0.0167, 0.1]
>>> bool(abs(sum(g.contribution for g in s.groups) - values.mean()) < 1e-12)
True
>>> s.lowest[0].row, s.highest[0].row
(2, 1)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from matprobe.errors import EstimationError
from matprobe.units import NATS, from_nats


@dataclass
class StratumPointwise:
    """One group of a term's items: its stratum (or class), n, mean value, contribution n / N x mean
    (the groups' contributions add up to the term's mean), share of items above 0 (the critic puts more
    probability on their label than the prior does), quartiles, and whether every item is exactly 0
    (an estimator sets a stratum with one class to 0 without fitting)."""

    given: dict
    n: int
    mean: float
    contribution: float
    positive: float
    q25: float
    median: float
    q75: float
    all_zero: bool = False


@dataclass
class PointwiseItem:
    """One listed item: its row (or, read from a file, its store id), its group and its value."""

    given: dict
    value: float
    row: int | None = None
    id: str | None = None


@dataclass
class PointwiseSummary:
    """A term's pointwise values per group of items, in `unit`.

    by: the factors that define the groups (the term's conditioning factors, else its target).
    mean: the mean over every item, the term's estimate before clipping.
    groups: one `StratumPointwise` per group. lowest / highest: `PointwiseItem`s with the smallest and
    largest values: the items whose embedding misleads the critic most, and those it reads best (items
    of a group that is 0 by definition, `StratumPointwise.all_zero`, are not listed).
    """

    by: list[str]
    mean: float
    n: int
    groups: list[StratumPointwise] = field(default_factory=list)
    lowest: list[PointwiseItem] = field(default_factory=list)
    highest: list[PointwiseItem] = field(default_factory=list)
    unit: str = NATS

    def to_dict(self, ids=None) -> dict:
        """JSON-ready; `ids` (one per row) name the listed items by id instead of row number."""
        def item(e: PointwiseItem) -> dict:
            if ids is not None and e.row is not None:
                return {"id": str(ids[e.row]), "given": e.given, "value": e.value}
            key = {"id": e.id} if e.id is not None else {"row": e.row}
            return {**key, "given": e.given, "value": e.value}

        return {"by": list(self.by), "unit": self.unit, "mean": self.mean, "n": self.n,
                "groups": [asdict(g) for g in self.groups], "lowest": [item(e) for e in self.lowest],
                "highest": [item(e) for e in self.highest]}

    @classmethod
    def from_dict(cls, doc: dict) -> "PointwiseSummary":
        def item(d: dict) -> PointwiseItem:
            return PointwiseItem(given=dict(d["given"]), value=float(d["value"]), row=d.get("row"), id=d.get("id"))

        names = {f.name for f in fields(StratumPointwise)}
        return cls(by=list(doc["by"]), mean=float(doc["mean"]), n=int(doc["n"]),
                   groups=[StratumPointwise(**{k: v for k, v in g.items() if k in names}) for g in doc["groups"]],
                   lowest=[item(d) for d in doc.get("lowest", [])], highest=[item(d) for d in doc.get("highest", [])],
                   unit=doc.get("unit", NATS))


def summarise_pointwise(values, groups, group_names: dict, *, by: list[str] | None = None, items: int = 5,
                        unit: str = NATS) -> PointwiseSummary:
    """Summarise per-item values (nats; [seeds, n] are averaged over seeds first) per group.

    groups: one integer code per item; group_names: {code: {factor: label}} naming each group;
    by: the factors that name the groups (default: the keys of the first name); items: how many
    of the lowest and highest items to list. Values are converted to `unit`.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 2:
        v = v.mean(axis=0)
    g = np.asarray(groups).reshape(-1)
    if v.ndim != 1 or len(v) != len(g):
        raise EstimationError(f"pointwise values of shape {np.shape(values)} do not match {len(g)} group codes; "
                              "give one value per item (or [seeds, items])")
    if len(v) == 0:
        raise EstimationError("no items to summarise: the term has no held-out rows")
    v = np.asarray(from_nats(v, unit), dtype=np.float64)
    n = len(v)
    out = []
    codes = np.unique(g)
    for code in codes:
        sel = v[g == code]
        q25, med, q75 = np.quantile(sel, [0.25, 0.5, 0.75])
        out.append(StratumPointwise(given=dict(group_names.get(int(code), {})), n=int(len(sel)),
                                    mean=float(sel.mean()), contribution=float(sel.sum() / n),
                                    positive=float((sel > 0).mean()), q25=float(q25), median=float(med),
                                    q75=float(q75), all_zero=bool(np.all(sel == 0.0))))
    # the listed items are read by a critic: a group whose every item is 0 (a stratum with one class,
    # set to 0 without fitting) holds none, and its items would head the lowest list of any term
    # whose other strata read above 0 (every Med-MAT study: Dermoscopy has one anatomy)
    zero_codes = [code for code, s in zip(codes, out) if s.all_zero]
    candidates = np.flatnonzero(~np.isin(g, zero_codes))
    order = candidates[np.argsort(v[candidates], kind="stable")]
    k = min(items, len(order))

    def listed(rows):
        return [PointwiseItem(given=dict(group_names.get(int(g[r]), {})), value=float(v[r]), row=int(r)) for r in rows]

    names = by if by is not None else list(next(iter(group_names.values()), {}))
    return PointwiseSummary(by=list(names), mean=float(v.mean()), n=n, groups=out, lowest=listed(order[:k]),
                            highest=listed(order[::-1][:k]), unit=unit)


def summary_of(estimate) -> PointwiseSummary | None:
    """A chain term's `PointwiseSummary` (`MIEstimate.diagnostics`, set by `estimate_terms` for
    pointwise estimators and read back by `ChainResult.from_json`), or None when it has none."""
    found = (getattr(estimate, "diagnostics", None) or {}).get("pointwise_summary")
    return found if isinstance(found, PointwiseSummary) else None
