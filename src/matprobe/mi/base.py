"""Cross-fitting, conditional strata and bootstrap intervals shared by the estimators.

An estimator implements `fit_fold` (train on the training folds, return per-row terms for the
held-out fold), or `fit_fold_seeds` to share work between a fold's seeds; this module runs
it over folds and seeds, forms the bound per stratum of C,
and turns row-level bootstrap replicates into an interval.

Conditional terms: I(Z;Y|C) = sum_c p(c) I(Z;Y|C=c) (docs/design.md §3), each stratum scored
against its own marginal p(y|c). Strata with H(Y|C=c) = 0 contribute exactly 0.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import time
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from scipy.special import ndtri  # the normal quantile (scipy.stats costs 1 s to import)

from matprobe.checks import check_level, check_pca
from matprobe.data.entropy import conditional_entropy, conditional_entropy_upper, joint_codes
from matprobe.defaults import DEFAULTS
from matprobe.errors import EstimationError
from matprobe.mi.interface import (
    LOWER,
    ONE_SIDED,
    TWO_SIDED,
    EstimatorTags,
    MIEstimate,
    StratumEstimate,
    TermNames,
    near_saturation,
)
from matprobe.mi.prep import (
    Preprocessor,
    SortedColumns,
    check_inputs,
    fold_kept_bases,
    label_free_reduction,
    stratified_folds,
)
from matprobe.mi.reduction_check import ResidualProjections
from matprobe.units import NATS, check_unit, from_nats

MEAN = "mean"  # bound = mean of per-row terms r
# The probe's learning-curve (Richardson) step assumes its bias falls like 1/n. If it falls
# like n^-a instead, what is left after the step is corr * (2 - 2^a) / (2^a - 1), which stays
# within one |corr| for every a >= 0.6 (a -> infinity: -corr; a = 1: 0; a = 0.6: 0.94 corr).
# Intervals are widened by this many |corr| on both sides (measured on 12 ground-truth tasks,
# RESULTS.md: half a step, which covers only 0.77 <= a <= 1.6, missed near-misses both ways).
EXTRAPOLATION_SLACK = 1.0
DV = "dv"  # bound = mean(a) - log mean(exp(lb))  (Donsker-Varadhan form)
# When the critic ladder picks a non-linear level, the gain it made over the linear level shows
# the linear family's approximation error was of that size; a richer family could gain part of
# it again, so the upper side of the interval is widened by this fraction of the gain.
LADDER_SLACK = 1.0
# fewer rows than this per (stratum, class) cell: the interval is flagged "low-n"
LOW_N_PER_CLASS = 20
# ... and when at least this share of a term's rows sits in such cells, its interval is one-sided
SMALL_CELL_SHARE = 0.05
# while the reduction's residual test finds label information left out (`mi.reduction_check`), a
# fold plan raises its PCA by this factor (64 -> 256 -> 1,024), to every coordinate once the step
# would keep half of Z's (within MAX_RAISED_PCA): the PCA saves little there, and what it still
# drops the test hardly sees (it leans negative where the kept part carries the signal:
# under-part at 256 of 512 components read 2-6% low at n = 20k with one interval missing, every
# coordinate 1.1%; RESULTS.md issue 22 twelfth session) ...
RAISE_PCA_FACTOR = 4
# ... up to this many components (the cost grows with them: 1,024 at n = 20k cost 21-27 CPU s per
# term) ...
MAX_RAISED_PCA = 1024
# ... and never so far that SMALL_CELL_SHARE of the rows sit in label cells with fewer than this
# many rows per critic input: on a massive-decay draw at n = 20k (8 classes, d = 4,096) 1,024
# components at 2.4 rows per input read 0.637 [0.585, 0.688] against 0.815, a narrow interval 22%
# low (256 at 9.6: 0.817 [0.733, 0.911]); at 4.9 rows per input 1,024 components read under-wide-4
# and every coordinate under-part (512) to about 1%
RAISE_ROWS_PER_INPUT = 4
# the name of the requested PCA's features where the plan raised it (`FoldPlan.requested_features`),
# as an alternative representation of a fold's rows
REQUESTED_PCA = "requested PCA"
UNMAPPED = "no quantile map"  # `FoldPlan.unmapped`'s key among the plan's features


@dataclass
class FoldOutput:
    """Per-row terms for the held-out rows of one fold, plus diagnostics."""

    arrays: dict[str, np.ndarray]
    diagnostics: dict = field(default_factory=dict)


@dataclass
class FoldPlan:
    """Fold ids over all rows and the preprocessed features per fold (fitted on train rows).

    Shared between the terms of one chain so PCA runs once per fold, not once per term.
    """

    fold: np.ndarray
    k: int
    pca: int | None
    gaussianize: bool
    features: dict[int, np.ndarray] = field(default_factory=dict)
    columns: SortedColumns | None = None  # z's columns sorted once for every fold's quantile map
    _flat: str | None = None
    # fits of label-dependent problems that two terms of the plan pose identically, keyed by the
    # problem's content (the probe: I(Z;F_1) with the later factors as sub-classes and the direct
    # joint term have the same cells, rows and penalty path); lives as long as the plan
    fits: dict = field(default_factory=dict)
    # bootstrap row weights of a term's strata (`bootstrap_row_weights`), for the later terms and
    # permutations whose strata have the same sizes (a chain's first and direct terms: 0.2 CPU s
    # at n = 20k); at most ROW_WEIGHTS_BUDGET bytes, first come first kept
    row_weights: dict = field(default_factory=dict)

    def flat(self, z: np.ndarray) -> str:
        """`flat_features` of z, computed once per plan (shared by the terms of a chain)."""
        if self._flat is None:
            self._flat = flat_features(z, self.k)
        return self._flat

    device: str = "cpu"
    per_fold: bool = False  # True: fit the preprocessing on each fold's training rows (before issue 22)
    # the finest label cells the folds were stratified by (a chain's joint code of every factor):
    # the reduction's residual test shares its projections between the terms whose cells they refine
    groups: np.ndarray | None = None
    # a group id per row whose groups of several rows the folds keep together (an image seen in
    # several rows, `prep.grouped_folds`): the estimator's own splits inside a fold keep them
    # together too (`MIEstimator.row_groups`); None: every row its own
    units: np.ndarray | None = None
    # what the label-free reduction left out, for `reduction_check` (None: nothing was reduced)
    residual: ResidualProjections | None = None
    # raise the PCA while the residual test finds label information left out (`settle_reduction`)
    raise_pca: bool = False
    reduction: ReductionRecord | None = None  # what `settle_reduction` did (None: not yet run)
    # the PCA components kept where the input's numerical rank cut the shared reduction short
    # (`prep.numerical_rank`; the per-fold preprocessing keeps its size)
    rank_cut: int | None = None
    _residual_tests: dict = field(default_factory=dict)  # `residual_test` per term
    # where `settle_reduction` raised the PCA: the features at the size asked for and their
    # residual tests per term. The critic may still predict better on them (a non-linear level
    # that gains on 70 inputs may not on 262: RESULTS.md, issue 22 fifteenth session), so the
    # estimators get them as an alternative representation of the same rows
    requested_features: np.ndarray | None = None
    requested_tests: dict = field(default_factory=dict)
    # z was scanned for NaN/Inf by a term of this plan (0.04 s per term at 20k x 4,096)
    finite_checked: bool = False

    def residual_test(self, y, c=None, active: np.ndarray | None = None):
        """The reduction's residual test (`mi.reduction_check`) of the term (y, c) on this plan's
        features, run once per term: `settle_reduction` and `estimate` share it. None where nothing
        was reduced (call `transformed` first). active: `active_rows(y, c)`, when known."""
        if self.residual is None:
            return None
        key = _term_key(y, c)
        if key not in self._residual_tests:
            rows = active_rows(y, c) if active is None else active
            self._residual_tests[key] = self.residual.test(y, c, rows, groups=self.groups)
        return self._residual_tests[key]

    def settle_reduction(self, z: np.ndarray, terms: list[tuple[np.ndarray, np.ndarray | None]]) -> ReductionRecord:
        """Fix the reduction every term of the plan shares, before any critic is fitted: test the
        residual of each term (y, c) (`mi.reduction_check`); while some term's labels were left
        out, raise the PCA by RAISE_PCA_FACTOR (to every coordinate once that step would keep
        half of Z's), within MAX_RAISED_PCA components and RAISE_ROWS_PER_INPUT rows per critic
        input in the label cells. Runs once per plan (a chain passes all its terms; a lone `estimate`
        its own); a term still flagged after it gets the flag's slack or a one-sided interval in
        `estimate`. Where it raised the PCA, the features at the requested size stay in
        `requested_features` (an alternative the estimators may choose per fold) with their tests
        in `requested_tests`.

        BLAS runs on one thread here, as in the folds and in a lone term's `estimate`
        (`one_blas_thread`): a chain settled its reduction on the default threads, whose waiting
        counted as CPU time (the 20k x 4,096 chain benchmark read 0.15 s more CPU than wall time,
        none since) and whose products could depend on the machine's core count (RESULTS.md,
        issue 22 thirty-sixth session)."""
        if self.reduction is not None:
            return self.reduction
        with one_blas_thread():
            return self._settle(z, terms)

    def _settle(self, z: np.ndarray, terms: list[tuple[np.ndarray, np.ndarray | None]]) -> ReductionRecord:
        """`settle_reduction`'s work, on one BLAS thread."""
        record = ReductionRecord(requested=self.pca, used=self.pca)
        self.reduction = record
        if not self.raise_pca or self.per_fold or self.pca is None or not terms:
            return record
        d = int(np.asarray(z).shape[1])
        groups = self.groups if self.groups is not None else joint_codes(
            [np.asarray(terms[0][0])] + ([] if terms[0][1] is None else [np.asarray(terms[0][1])]))
        counts = np.unique(np.asarray(groups), return_counts=True)[1]
        while True:
            features = self.transformed(z, 0)
            if self.residual is None:  # nothing was reduced
                break
            # one test per distinct term (a one-factor chain's term and its direct term are one)
            tests = list({_term_key(y, c): self.residual_test(y, c) for y, c in terms}.values())
            flagged = sum(t.dropped for t in tests)
            record.steps.append({"pca": self.pca, "features": int(features.shape[1]),
                                 "max_z": max(t.z for t in tests), "flagged_terms": flagged})
            if not flagged:
                break
            step = self.pca * RAISE_PCA_FACTOR
            if step >= d or (2 * step >= d and d <= MAX_RAISED_PCA):
                step = d  # every coordinate
            # + the massive axes (the features past the PCA's components, fewer than asked where
            # the input's numerical rank cut them: `prep.numerical_rank`)
            components = self.pca if self.rank_cut is None else self.rank_cut
            width = d if step >= d else step + int(features.shape[1]) - components
            if min(step, d) > MAX_RAISED_PCA:
                size = f"every coordinate ({d})" if step >= d else f"{step} components"
                record.stopped = (f"{size} would exceed {MAX_RAISED_PCA} components, the most matprobe tries on "
                                  "its own (the critic's calibration was measured up to there)")
                break
            if small_cell_share(counts, RAISE_ROWS_PER_INPUT * (width + 1)) >= SMALL_CELL_SHARE:
                record.stopped = (f"{width + 1} critic inputs would leave label cells holding {SMALL_CELL_SHARE:.0%} "
                                  f"of the rows with fewer than {RAISE_ROWS_PER_INPUT} rows per input")
                break
            if self.requested_features is None:
                self.requested_features = features
                self.requested_tests = dict(self._residual_tests)
            self.pca = None if step >= d else step
            self.features.clear()
            self.fits.clear()
            self.residual = None
            self._residual_tests.clear()
        record.used = self.pca
        return record

    def unmapped(self, z: np.ndarray) -> np.ndarray | None:
        """The shared reduction without the per-coordinate quantile map (label-free, computed once and
        only when asked: the probe asks in folds whose rows share a heavy-tailed scale), or None where
        the plan maps nothing or fits its preprocessing per fold. The quantile map squashes each
        coordinate's tail on its own, which bends an elliptical tail (a scale shared by signal
        directions rotated across the coordinates) out of shape (RESULTS.md, issue 22 nineteenth session)."""
        if self.per_fold or not self.gaussianize:
            return None
        if UNMAPPED not in self.features:
            self.features[UNMAPPED] = label_free_reduction(z, self.pca, False, seed=0, device=self.device).features
        return self.features[UNMAPPED]

    def transformed(self, z: np.ndarray, f: int) -> np.ndarray:
        """Fold f's features. The preprocessing is label-free, so by default it is fitted once
        on all rows and every fold, term and seed shares it (`prep.label_free_features`)."""
        if not self.per_fold:
            if "all" not in self.features:
                red = label_free_reduction(z, self.pca, self.gaussianize, seed=0, device=self.device)
                self.features["all"], self.rank_cut = red.features, red.rank_cut
                if red.pca_input is not None:
                    # few training rows per coordinate: each fold's residual against a PCA of its
                    # training rows alone (`mi.reduction_check`'s module docstring)
                    train_rows = len(self.fold) - np.bincount(self.fold).max()
                    fold_bases = (fold_kept_bases(red, self.fold)
                                  if train_rows < FOLD_PCA_ROWS_PER_COORDINATE * z.shape[1] else None)
                    self.residual = ResidualProjections(red.pca_input, red.kept_basis, self.fold,
                                                        fold_bases=fold_bases)
            return self.features["all"]
        if f not in self.features:
            if self.gaussianize and self.columns is None:
                self.columns = SortedColumns(z)
            prep = Preprocessor(self.pca, self.gaussianize, seed=f)
            self.features[f] = prep.fit_transform(z, self.fold != f, self.columns)
            if len(self.features) == self.k:
                self.columns = None  # every fold is mapped: free the sorted copy
        return self.features[f]


@dataclass
class ReductionRecord:
    """What `FoldPlan.settle_reduction` did: the PCA size asked for and the one used (None: every
    coordinate); per step tried, its size, feature count, the largest residual z over the terms and
    how many terms the residual test flagged; why raising stopped while a term was still flagged."""

    requested: int | None
    used: int | None
    steps: list[dict] = field(default_factory=list)
    stopped: str = ""

    @property
    def raised(self) -> bool:
        return self.used != self.requested

    def to_dict(self) -> dict:
        return {"requested": self.requested, "used": self.used, "steps": list(self.steps), "stopped": self.stopped}

    def note(self) -> str:
        """A sentence for a term's note when the PCA was raised, else ""."""
        if not self.raised:
            return ""
        first = self.steps[0]
        used = "every coordinate" if self.used is None else f"{self.used} components"
        return (f"the PCA was raised from {self.requested} components to {used}: at {self.requested} the "
                f"reduction left label information out of {first['flagged_terms']} term(s) (residual test, "
                f"z up to {first['max_z']:.1f})")


def rank_cut_note(kept: int, asked: int | None) -> str:
    """A term's note where the PCA kept fewer components than asked (`prep.numerical_rank`).

    >>> rank_cut_note(10, 64)[:58]
    'the PCA kept 10 of its 64 components: the rows lie in a 10'
    """
    return (f"the PCA kept {kept} of its {asked} components: the rows lie in a {kept}-dimensional subspace of Z "
            "(the next component's variance over 100-fold smaller, below a median coordinate's), and past it "
            "is the numerical noise of the quantile map or of rounding, not signal")


def _unmapped_rows(plan: FoldPlan, z, tr, ev) -> tuple[np.ndarray, np.ndarray]:
    """A fold's training and held-out rows of `plan.unmapped(z)`."""
    u = plan.unmapped(z)
    return u[tr], u[ev]


def join_notes(notes) -> str:
    """The notes joined by "; ", with what a one-sided interval states said once: the reasons
    after the first that made it one-sided say "one-sided (as above)" instead.

    >>> join_notes([f"a: {ONE_SIDED}", "b", f"c, so {ONE_SIDED}"]).count("only the lower end")
    1
    """
    out, said = [], False
    for note in notes:
        if ONE_SIDED in note:
            note = note.replace(ONE_SIDED, "one-sided (as above)") if said else note
            said = True
        out.append(note)
    return "; ".join(out)


def _term_key(y, c=None) -> bytes:
    """A term's identity by the content of its labels (y, c), c None meaning one stratum."""
    y = np.ascontiguousarray(y)
    c = np.zeros(len(y), dtype=np.int64) if c is None else np.ascontiguousarray(c)
    return hashlib.blake2b(y.tobytes() + b"|" + c.tobytes(), digest_size=16).digest()


def active_rows(y, c=None) -> np.ndarray:
    """Rows in strata of c with more than one class of y (the rows a conditional term is read on)."""
    y = np.asarray(y)
    if c is None:
        return np.full(len(y), np.unique(y).size > 1)
    c = np.unique(np.asarray(c), return_inverse=True)[1].reshape(-1)
    yc = np.unique(y, return_inverse=True)[1].reshape(-1)
    pairs = np.unique(c * (int(yc.max(initial=0)) + 1) + yc)
    classes = np.bincount(pairs // (int(yc.max(initial=0)) + 1), minlength=int(c.max(initial=-1)) + 1)
    return classes[c] > 1


def lexicographic_cells(columns: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct rows of the stacked label columns, in lexicographic order: each row's cell
    index, and per column the value of each cell. The same cells in the same order as
    `np.unique(np.stack(columns, 1), axis=0)`, by one integer key built from each column's rank
    codes (np.unique over stacked rows sorts structured rows: 15 against 1 ms at 20k rows).

    >>> cell, (a, b) = lexicographic_cells([np.array([1, 0, 1, 1]), np.array([5, 7, 5, 2])])
    >>> cell.tolist(), a.tolist(), b.tolist()
    ([2, 0, 2, 1], [0, 1, 1], [7, 2, 5])
    """
    key, sizes, uniques = None, [], []
    for col in columns:
        values, codes = np.unique(np.asarray(col), return_inverse=True)
        codes = codes.reshape(-1).astype(np.int64)
        key = codes if key is None else key * len(values) + codes
        sizes.append(len(values))
        uniques.append(values)
    cells, cell_of_row = np.unique(key, return_inverse=True)
    per_column, stride = [], 1
    for size, values in zip(reversed(sizes), reversed(uniques)):
        per_column.append(values[cells // stride % size])
        stride *= size
    return cell_of_row.reshape(-1), per_column[::-1]


def _given_words(given) -> str:
    """A stratum's name (`StratumEstimate.given`) in a note: "Ultrasound / Abdomen" for a mapping of
    factor to label, else as it is."""
    return " / ".join(map(str, given.values())) if isinstance(given, dict) else str(given)


def _raise_to_one_sided_strata(result: MIEstimate, n: int, limit: float) -> str:
    """A two-sided term whose strata include a one-sided entry (its own small cells or near
    saturation; `_strata_entries`): the term is the strata's row-weighted sum, so its upper end is
    raised to at least the sum of the strata's upper ends, a one-sided stratum's being its entropy
    cap. Returns the note, or "" where nothing changed. (An outside study, issue 22: I(Z;Y|C) with a
    20% stratum of small cells, one-sided on its own, inside a term under the small-cells line: 8
    of the term's 13 missed two-sided intervals in 39 draws, all below the truth.)"""
    lower = [e for e in result.strata if e.bound == LOWER]
    if not lower:
        return ""
    summed = min(sum(e.ci_high * e.n for e in result.strata) / max(n, 1), limit)
    if summed <= result.ci_high:
        return ""
    result.ci_high = summed
    named = ", ".join(_given_words(e.given) for e in lower[:4]) + (f" and {len(lower) - 4} more" if len(lower) > 4 else "")
    return (f"{'a stratum' if len(lower) == 1 else f'{len(lower)} strata'} ({named}) read one-sided on "
            f"{'its' if len(lower) == 1 else 'their'} own (see the strata entries), so the term's upper end "
            "is the strata's upper ends weighted by their rows, a one-sided stratum's being its entropy cap")


def small_cell_share(counts: np.ndarray, inputs: int, floor: int = LOW_N_PER_CLASS) -> float:
    """The share of rows in cells (`counts`: rows per cell) with fewer rows than `inputs` (at least
    `floor`): at SMALL_CELL_SHARE or more a term is one-sided ("small-cells"), a fold plan does not
    raise its PCA that far (`settle_reduction`), and the probe fits no wider representation
    (`floor` 0 there: the inputs alone)."""
    return float(counts[counts < max(floor, inputs)].sum()) / max(int(counts.sum()), 1)


def cell_surprise(counts: np.ndarray, cell_strata: np.ndarray, cell_classes: np.ndarray) -> np.ndarray:
    """Per cell, the label entropy its rows carry, in nats summed over them: rows x -log p(y|c)
    (plug-in), `cell_strata`, `cell_classes` each cell's stratum and class (a class split into
    sub-class cells is counted at its class's probability). Their sum over a stratum's cells is
    that stratum's rows times its H(Y|C=c).

    A row's pointwise information log p(y|z,c) / p(y|c) is at most its -log p(y|c), so what a term
    can read on some rows is at most their surprise. Rare classes hold a larger share of it than of
    the rows: K = 10 classes with 2.9% of the rows in four small ones carry 14% of H(Y), and
    estimates read 13% low in two-sided intervals (RESULTS.md, issue 22, forty-fifth session).

    >>> counts = np.array([900, 80, 20])  # one stratum, three classes; the last under 65 inputs
    >>> surprise = cell_surprise(counts, np.zeros(3), np.arange(3))
    >>> surprise.round(1).tolist(), round(float(surprise[2]) / 1000, 4), round(float(surprise[2] / surprise.sum()), 3)
    ([94.8, 202.1, 78.2], 0.0782, 0.209)
    """
    counts = np.asarray(counts, dtype=np.float64)
    _, stratum = np.unique(np.asarray(cell_strata), return_inverse=True)
    _, klass = np.unique(np.stack([np.asarray(cell_strata), np.asarray(cell_classes)], 1), axis=0,
                         return_inverse=True)
    stratum, klass = stratum.reshape(-1), klass.reshape(-1)
    per_stratum = np.bincount(stratum, weights=counts)[stratum]
    per_class = np.bincount(klass, weights=counts)[klass]
    return counts * np.log(per_stratum / np.maximum(per_class, 1.0))  # 0 where a cell is empty


def settled_pca(diagnostics: dict | None, asked: int | None) -> int:
    """The PCA components an estimate was read at: `asked`, or the size its fold plan settled on
    (`diagnostics["reduction"]`, `FoldPlan.settle_reduction`); 0 for every coordinate, as `--pca 0`."""
    red = (diagnostics or {}).get("reduction")
    used = red["used"] if red else asked
    return 0 if used is None else int(used)


def _feature_dim(plan, z) -> int:
    """Columns the critic sees (after the plan's reduction)."""
    if isinstance(plan, FoldPlan) and plan.features:
        return int(next(iter(plan.features.values())).shape[1])
    return int(np.asarray(z).shape[1])


def clip_at_zero(value: float, lo: float, hi: float) -> tuple[float, float, float, list[str], list[str]]:
    """MI >= 0: (value, lo, hi) clipped at 0, with the flags and notes that say so.

    A lower end below 0 is set to 0 silently (a null's interval straddles 0). A point estimate
    below 0 is set to 0 and flagged "below-zero". An interval wholly below 0 (the critic
    predicts worse than the label frequencies on every resample: the estimator is biased low,
    e.g. overfitting at small n) is moved up to start at 0 keeping its width, [0, hi - lo], and
    flagged "interval-below-zero": 'no detectable dependence, at most this much', never an error.
    """
    flags, notes = [], []
    if hi < 0:
        flags += ["below-zero", "interval-below-zero"]
        notes.append(f"the whole interval [{lo:.4f}, {hi:.4f}] nats lies below 0 (the held-out critic "
                     "predicts Y worse than its frequencies: biased low at this n); reported as 0 with the "
                     "interval moved up to start at 0, its width kept: read it as 'no detectable dependence'")
        return 0.0, 0.0, hi - lo, flags, notes
    if value < 0:
        flags.append("below-zero")
        notes.append(f"estimate {value:.4f} nats < 0 (the held-out critic predicts Y worse than its "
                     "frequencies p(y|c): no dependence detectable at this n); MI is >= 0, reported as 0")
        value = 0.0
    return value, max(lo, 0.0), hi, flags, notes


# A coordinate whose spread (max - min) is at most this fraction of its largest magnitude varies
# only by float32 rounding (about 80 ulps): it is treated as constant
FLAT_REL_TOL = 1e-5
# ... and a coordinate whose spread is at most this fraction of the largest magnitude of the whole of Z
# varies by less than float32 rounding of the row's sums (eps 1.2e-7): a study's zero-projector Gemma
# store varied by 3e-8 in coordinates near 0 beside others of size 1, batch to batch, and the probe
# read 0.087 nats of "modality" in that rounding (the batches follow the manifest's order)
FLAT_GLOBAL_REL_TOL = 1e-7


def flat_features(z: np.ndarray, folds: int) -> str:
    """Why Z carries no usable information ("" when it does): every coordinate is constant up
    to FLAT_REL_TOL of its magnitude, or all but fewer than 2 x folds rows are one row (too few
    for the training folds to see a second value)."""
    z = np.asarray(z)
    lo, hi = z.min(axis=0), z.max(axis=0)
    scale = np.maximum(np.abs(lo), np.abs(hi)).astype(np.float64)
    whole = float(scale.max(initial=0.0))
    floor = np.maximum(FLAT_REL_TOL * scale, FLAT_GLOBAL_REL_TOL * whole) + np.finfo(np.float32).tiny
    varying = (hi - lo).astype(np.float64) > floor
    if not varying.any():
        return ("Z is constant (every coordinate varies by at most "
                f"{FLAT_REL_TOL:g} of its magnitude, or {FLAT_GLOBAL_REL_TOL:g} of Z's largest, float32 rounding): it "
                "carries no information, so the term is exactly 0")
    tol = floor.astype(np.float32)

    def n_off(cols):
        # rows that differ from row 0, and from the first row that differs from row 0: when all
        # but a few rows are one row, one of the two counts is those few (no median needed)
        zv, t = z[:, cols], tol[cols]
        off = (np.abs(zv - zv[0]) > t).any(axis=1)
        if not off.any():
            return 0
        return min(int(off.sum()), int((np.abs(zv - zv[int(np.argmax(off))]) > t).any(axis=1).sum()))

    cols = np.flatnonzero(varying)
    # one column with enough differing rows settles it (real features: at once); else all of them
    few = len(z) >= 4 * folds and n_off(cols[:1]) < 2 * folds
    count = n_off(cols) if few else 2 * folds
    if count < 2 * folds:
        return (f"Z is nearly constant: only {count} of {len(z)} rows differ from the others (fewer than "
                f"2 x {folds} folds), so no training fold can learn from them; the term is reported as 0")
    return ""


@functools.cache
def _blas_controller():
    """One threadpoolctl controller per process (building one reads the loaded libraries: 6 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@functools.cache
def _blas_libraries() -> tuple:
    """The BLAS libraries' controllers of `_blas_controller` (threadpoolctl's LibController)."""
    return tuple(_blas_controller().select(user_api="blas").lib_controllers)


@contextlib.contextmanager
def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread. The folds' products are small or
    memory-bound: a second BLAS thread only waited, and its spinning counted 0.6-0.9 CPU s of the
    20k x 4,096 chain (7%; 19% more where only the fits were limited), and inside the pipeline's
    worker processes it oversubscribed the cores (the quick demo's MI step took 14x longer).

    Each library's thread count is read, set to 1 and restored directly: threadpoolctl's
    `limit()` also rebuilt every library's description on each entry, 3% of a small estimate's
    time (it is entered once per critic fit; thirty-third session, RESULTS.md). Nested entries
    find 1 and change nothing."""
    libs = _blas_libraries()
    before = [lib.get_num_threads() for lib in libs]
    try:
        for lib, n in zip(libs, before):
            if n is not None and n != 1:
                lib.set_num_threads(1)
        yield
    finally:
        for lib, n in zip(libs, before):
            if n is not None and n != 1:
                lib.set_num_threads(n)


def plan_folds(groups, k: int = 5, seed: int = 0) -> np.ndarray:
    """The fold id of each row in the plan `make_plan` builds for these groups, k and seed
    (callers that pair two estimates on one plan's folds read them here)."""
    return stratified_folds(np.asarray(groups), k, np.random.default_rng([seed, 7919]))


def make_plan(z, groups, k=5, pca=64, gaussianize=True, seed=0) -> FoldPlan:
    return FoldPlan(plan_folds(groups, k, seed), k, pca, gaussianize, groups=np.asarray(groups))


# below this many training rows per coordinate of Z, the reduction's residual test takes each
# fold's residual against a PCA of its training rows alone (`prep.fold_kept_bases`): two Gaussian
# classes under isotropic noise in d = 4,096 missed two-sided 10-17% low at n = 2k and 3-10% low
# at n = 8k (6,400 training rows: 1.6 per coordinate), 3-6% low at 12-16k (RESULTS.md, issue 22
# forty-seventh session); at 2 the fold PCAs stay off the n = 20k, d = 4,096 path (3.9 per coordinate)
FOLD_PCA_ROWS_PER_COORDINATE = 2

ROW_WEIGHTS_BUDGET = 64 * 2**20  # bytes of bootstrap row weights a fold plan keeps (n = 20k, B = 300: 48 MB)


def bootstrap_row_weights(rng: np.random.Generator, n_c: int, B: int, cache: dict | None = None,
                          key: tuple | None = None) -> np.ndarray:
    """Row weights [B + 1, n_c] of one stratum: row 0 all ones, rows 1..B multinomial(n_c,
    uniform) counts, drawn from `rng`. Each row sums to n_c exactly.

    cache/key: a dict (`FoldPlan.row_weights`) and what fixes the draw, i.e. the stream's seed,
    B and the sizes of every stratum drawn from it so far, this one last. A hit returns the
    cached weights and leaves `rng` where the draw would have left it, so what is drawn next is
    the same bit for bit; a miss is stored while the cache holds under ROW_WEIGHTS_BUDGET bytes.
    The weights are read-only."""
    if cache is not None and key in cache:
        w, state = cache[key]
        rng.bit_generator.state = state
        return w
    w = np.empty((B + 1, n_c))
    w[0] = 1.0
    # multinomial(n_c, uniform) counts, drawn as n_c row indices per replicate (6x faster than
    # rng.multinomial at n_c = 20k), counted replicate by replicate (a count array that stays in
    # cache: 10x faster than one bincount over all replicates) (int32: the same values as int64
    # from the same stream, since both draw 32-bit bounded integers for ranges under 2^32; a
    # third less time at n_c = 20k)
    draws = rng.integers(0, n_c, size=(B, n_c), dtype=np.int32 if n_c < 2**31 else np.int64)
    for b in range(B):
        w[b + 1] = np.bincount(draws[b], minlength=n_c)
    w.flags.writeable = False
    if cache is not None and sum(v.nbytes for v, _ in cache.values()) + w.nbytes <= ROW_WEIGHTS_BUDGET:
        cache[key] = (w, rng.bit_generator.state)
    return w


def stratum_values(kind: str, arrays: dict[str, np.ndarray], weights: np.ndarray,
                   wsum: np.ndarray | None = None) -> np.ndarray:
    """Bound for one stratum under row weights [B, n_c] (bootstrap multiplicities); returns [B].
    wsum: each replicate's total weight, where the caller knows it (default: summed here)."""
    wsum = weights.sum(axis=1) if wsum is None else wsum
    if kind == MEAN:
        return weights @ arrays["r"] / wsum
    a, lb = arrays["a"], arrays["lb"]
    m = lb.max()
    return weights @ a / wsum - (np.log(weights @ np.exp(lb - m) / wsum) + m)


def withhold_unsupported_steps(kind: str, per_seed: list[dict[str, np.ndarray]], c: np.ndarray,
                               active: np.ndarray) -> list[int]:
    """The learning-curve step taken back in each stratum whose held-out estimate before it,
    pooled over its rows and seeds, is at most 0: there the critic did not beat the label prior at
    n rows, and the step I(n) + (I(n) - I(n/2)) extrapolates from two values at or below 0, which on
    noise measures how much worse the half fit overfitted rather than a shortfall (the 1/n law
    would put the stepped value at 0 there; it read 0.14-0.69). The part taken back moves to the
    interval's upper side ("step_withheld", `_aggregate`), so the interval still reaches what the
    step would have said. In place on the per-row arrays (the point, the paired differences and the
    pointwise terms all drop it); returns the codes of the strata where it was withheld.

    Measured on noise with one two-class stratum of 60 rows among one-class ones (CrossMed-like
    I(Z;T|M,A)): with the step 9 of 40 draws read >= 0.05 nats, 6 at the term's cap; without it in
    those strata none (largest 0.006). Not a cap on the step where the value before it is above 0:
    holding the step to that value (the half fit's value taken as >= 0) read a 60-row stratum of
    truth 0.205 as 0.024 where the step read 0.201 (RESULTS.md, issue 22 twenty-eighth session)."""
    if not per_seed or "corr" not in per_seed[0]:
        return []
    key = "r" if kind == MEAN else "a"
    withheld = []
    for code in np.unique(c[active]):
        idx = np.flatnonzero((c == code) & active)
        step = float(np.mean([a["corr"][idx].mean() for a in per_seed]))
        before = float(np.mean([stratum_values(kind, {k: v[idx] for k, v in a.items()}, np.ones((1, len(idx))))[0]
                                for a in per_seed])) - step
        if before > 0.0:
            continue
        withheld.append(int(code))
        for a in per_seed:
            cut = a["corr"][idx]
            a.setdefault("step_withheld", np.zeros(len(c)))[idx] = cut
            a[key][idx] = a[key][idx] - cut
    return withheld


def pointwise_terms(kind: str, per_seed: list[dict[str, np.ndarray]], c: np.ndarray,
                    active: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row held-out contributions whose row mean is each seed's (unclipped) estimate.

    Returns {"values": float64 [seeds, n], "corr": [seeds, n] or absent}. Rows in strata with
    H(Y|C=c) = 0 are exactly 0. For the mean kind a row's value is its term r; for the DV kind
    it is a_i - log mean_{j in stratum} exp(lb_j), whose stratum mean is the stratum's bound,
    so mean over rows = sum_c p(c) I_c either way (issue 7: paired comparisons on shared rows).
    """
    n = len(c)
    values = np.zeros((len(per_seed), n))
    corr = np.zeros((len(per_seed), n)) if "corr" in per_seed[0] else None
    for s_i, arrays in enumerate(per_seed):
        if kind == MEAN:
            values[s_i, active] = arrays["r"][active]
        else:
            for code in np.unique(c[active]):
                idx = np.flatnonzero((c == code) & active)
                lb = arrays["lb"][idx]
                m = lb.max()
                values[s_i, idx] = arrays["a"][idx] - (np.log(np.mean(np.exp(lb - m))) + m)
        if corr is not None:
            corr[s_i, active] = arrays["corr"][active]
    out = {"values": values}
    if corr is not None:
        out["corr"] = corr
    return out


def init_parameter_names(cls) -> list[str]:
    """The keyword parameters of `cls.__init__` and of its bases' (most derived first)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                names.append(p.name)
    return names


class CrossFitEstimator:
    """Base: k-fold cross-fitting over several seeds with bootstrap intervals.

    Parameters shared by all estimators: folds, seeds, pca (None = keep all dims),
    gaussianize (per-coordinate quantile-to-normal), ci_level, n_boot, unit,
    min_stratum (strata with fewer rows are reported as sparse), raise_pca (raise the PCA while
    it leaves label information out, `FoldPlan.settle_reduction`; False keeps `pca` as given).
    """

    name = "base"
    kind = MEAN
    tags = EstimatorTags(uses_fold_plan=True, pointwise=True, conditional=True, critic_cells=True)  # tags.bound: "two-sided" when the interval includes the bias, else "lower"

    def __init__(self, folds: int = DEFAULTS.folds, seeds: int = DEFAULTS.seeds, pca: int | None = DEFAULTS.pca,
                 gaussianize: bool = True, ci_level: float = DEFAULTS.level, n_boot: int = DEFAULTS.mi_n_boot,
                 unit: str = NATS, min_stratum: int = DEFAULTS.min_stratum, device: str = "cpu",
                 seed: int = DEFAULTS.seed, raise_pca: bool = True):
        if folds < 2:
            raise EstimationError(f"folds must be >= 2 for held-out evaluation, got {folds}")
        if seeds < 1:
            raise EstimationError(f"seeds must be >= 1, got {seeds}")
        # 0 is no reduction, as `--pca 0` and MI files have it (passed on as 0 it hung the reduction)
        self.folds, self.seeds, self.pca, self.gaussianize = folds, seeds, check_pca(pca, "pca", EstimationError), gaussianize
        self.ci_level, self.n_boot, self.unit = check_level(ci_level, "ci_level"), n_boot, check_unit(unit)
        self.min_stratum, self.device, self.seed = min_stratum, device, seed
        self.raise_pca = raise_pca

    # ------------------------------------------------------------------ to override
    def get_params(self) -> dict:
        """Every `__init__` parameter of this class and its bases with its value, read off the
        signatures as scikit-learn's `get_params` does (so the record cannot drift from the code).

        >>> from matprobe.mi import make_estimator
        >>> p = make_estimator("probe", seeds=2, penalties=(1e-3,)).get_params()
        >>> p["seeds"], p["penalties"], p["folds"] == DEFAULTS.folds
        (2, (0.001,), True)
        """
        return {name: getattr(self, name) for name in init_parameter_names(type(self))}

    def misspecification(self, diags: list[dict]) -> str | None:
        """A sentence when the fold fits (`diags`: one dict per fold and seed, with "fold" and
        "seed") show that the critic family is misspecified, else None. Then the term is flagged
        "misspecified-linear" and its interval is one-sided. Estimators with a critic ladder
        override this; the others cannot tell."""
        return None

    def scheme(self) -> dict:
        """Fixed parts of the fitting scheme that are not parameters but change the numbers
        (an optimiser, a tolerance); recorded beside the parameters. Override to add entries."""
        return {}

    def params(self) -> dict:
        """`get_params` in JSON form (tuples as lists) plus `scheme`: what a result records."""
        own = {k: list(v) if isinstance(v, tuple) else v for k, v in self.get_params().items()}
        return {**own, **self.scheme()}

    def fit_fold(self, x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seed) -> FoldOutput:
        raise NotImplementedError

    # ------------------------------------------------------------------ driver
    def fold_plan(self, z, groups, fold: np.ndarray | None = None) -> FoldPlan:
        """A fold plan with this estimator's folds and preprocessing, stratified by `groups`
        (or over the given fold ids), to share between several `estimate` calls."""
        if fold is not None:
            return FoldPlan(np.asarray(fold), self.folds, self.pca, self.gaussianize, device=self.device,
                            raise_pca=self.raise_pca)
        plan = make_plan(z, groups, self.folds, self.pca, self.gaussianize, self.seed)
        plan.device, plan.raise_pca = self.device, self.raise_pca
        return plan

    def estimate(self, z, y, c=None, *, sub=None, plan: FoldPlan | None = None, names: TermNames | None = None,
                 pointwise: bool = False) -> MIEstimate:
        """I(Z;Y) or I(Z;Y|C) with held-out cross-fitting (the `MIEstimator` Protocol).

        sub: optional finer labels (e.g. the factors after Y in a chain) used as mixture
        sub-classes by critics that support them; only training rows see them.
        plan: a shared FoldPlan (folds + cached preprocessing) from `fold_plan`.
        names: a TermNames for messages and per-stratum entries.
        pointwise: keep per-row held-out terms in diagnostics["pointwise"] (`pointwise_terms`).
        """
        t0 = time.perf_counter()
        names = names or TermNames()
        y_name, c_name, stratum_names = names.target, names.given, names.strata
        z, y, c = check_inputs(z, y, c, y_name=y_name, c_name=c_name, min_rows=2 * self.folds,
                               known_finite=isinstance(plan, FoldPlan) and plan.finite_checked)
        if isinstance(plan, FoldPlan):  # the plan's later terms share this z: its NaN/Inf scan runs once
            plan.finite_checked = True
        n = len(y)
        cap_name = "H(Y)" if c is None else "H(Y|C)"  # the entropy cap as the term's notes name it
        c = np.zeros(n, dtype=np.int64) if c is None else c
        sub = np.zeros(n, dtype=np.int64) if sub is None else np.asarray(sub)
        h_upper = conditional_entropy(y, c)
        strata = np.unique(c)
        active = np.zeros(n, dtype=bool)
        strata_info = []
        for s in strata:
            sel = c == s
            ys = y[sel]
            n_s = int(sel.sum())
            h_s = conditional_entropy(ys)
            single = np.unique(ys).size == 1
            if not single:
                active |= sel
            # the stratum's own upper end: its population entropy's upper confidence limit, as
            # the term's (`conditional_entropy_upper`), not the stratum's plug-in entropy
            h_lim = h_s if single else max(conditional_entropy_upper(ys, None, self.ci_level), h_s)
            strata_info.append({"code": int(s), "n": n_s, "h": h_s, "h_limit": h_lim, "single": single,
                                "classes": int(np.unique(ys).size)})
        result = MIEstimate(value=0.0, ci_low=0.0, ci_high=0.0, ci_level=self.ci_level,
                            unit=self.unit, n_train=0, n_eval=n, estimator=self.name,
                            params=self.params(), h_upper=from_nats(h_upper, self.unit))
        if h_upper <= 1e-12 or not active.any():
            result.degenerate = True
            result.note = "H(Y|C) = 0: every stratum has one class, so the term is exactly 0"
            result.strata = self._strata_entries(strata_info, {}, stratum_names)
            return result
        if plan is None:
            plan = self.fold_plan(z, joint_codes([y, c]))
        flat = plan.flat(z) if isinstance(plan, FoldPlan) else flat_features(z, self.folds)
        if flat:
            # Z carries no information: I(Z;Y|C) = 0 exactly, nothing to fit (issue 22: this
            # took 29 s on 2,000 rows and then failed as an interval below 0)
            result.degenerate = True
            result.flags = ["constant-features"]
            result.note = flat
            result.strata = self._strata_entries(strata_info, {s["code"]: (0.0, 0.0, 0.0) for s in strata_info},
                                                 stratum_names)
            return result
        reduction = None
        with one_blas_thread():
            if isinstance(plan, FoldPlan):
                # a plan from `fold_plan` used on its own settles on this term; a chain's plan has
                # settled on all its terms already (`chain.estimate_terms`)
                reduction = plan.settle_reduction(z, [(y, c)])
            per_seed, diags = self._run_folds(z, y, c, sub, active, plan)
            withheld = withhold_unsupported_steps(self.kind, per_seed, c, active)
            if pointwise:  # issue 7: per-row held-out terms for paired comparisons
                pointwise_out = pointwise_terms(self.kind, per_seed, c, active)
            est = self._aggregate(per_seed, y, c, active, strata_info, n,
                                  row_weights=plan.row_weights if isinstance(plan, FoldPlan) else None,
                                  units=plan.units if isinstance(plan, FoldPlan) else None)
        value, lo, hi, stratum_vals, seed_vals, seed_intervals = est
        notes, flags = [], []
        if reduction is not None and reduction.raised:
            notes.append(reduction.note())
        if isinstance(plan, FoldPlan) and plan.rank_cut is not None:
            notes.append(rank_cut_note(plan.rank_cut, plan.pca))
        misspecified = self.misspecification(diags)
        if misspecified:
            # a critic family shown to be wrong has a shortfall no learning curve or level gap
            # bounds (issue 22: heavy-tailed and variance-only classes, 10-30% low with two-sided
            # intervals covering 4-8 of 10): only the lower end is a statement
            flags.append("misspecified-linear")
            notes.append(misspecified + "; the shortfall of a misspecified critic is not bounded, so " + ONE_SIDED)
        cells = sum(s["classes"] for s in strata_info if not s["single"])
        if cells and int(active.sum()) / cells < LOW_N_PER_CLASS:
            flags.append("low-n")
            notes.append(f"low n: {int(active.sum()) / cells:.0f} rows per class (< {LOW_N_PER_CLASS}); "
                         "the interval's bias allowance is not reliable this small")
        # rows in the critic's cells with fewer rows than the critic has inputs (features + 1,
        # at least LOW_N_PER_CLASS): there a class's head is underdetermined and the probe stays
        # low by more than its learning curve shows (calibration, issue 22: chain-tiny 15-20% low
        # with 8-12% of rows in cells under 20, learning-curve step 0.02-0.03 nats; K = 50 at
        # 40 rows per class, d = 64: 12% low), so the bias is not bounded: one-sided interval
        n_inputs = _feature_dim(plan, z) + 1
        small_rows = max(LOW_N_PER_CLASS, n_inputs)
        # the critic's softmax cells: (stratum, class) or, with sub-classes, (stratum, class, sub)
        cell_of_row, (cell_strata, cell_classes, _) = lexicographic_cells([c[active], y[active], sub[active]])
        cell_counts = np.bincount(cell_of_row, minlength=len(cell_strata))
        small_share = small_cell_share(cell_counts, n_inputs)  # cell_counts sum to the active rows
        one_sided = small_share >= SMALL_CELL_SHARE
        # under that line, rare classes can still hold much of H(Y|C) in few rows: K = 10 classes
        # with 2.9% of the rows in small cells, 14% of H(Y), read 13% low in two-sided intervals
        # (RESULTS.md, issue 22, forty-fifth session). What those rows carry is at most their
        # entropy, so from SMALL_CELL_SHARE of H(Y|C) the upper end is raised by it (nats per row of
        # the term); under both lines nothing changes
        surprise = cell_surprise(cell_counts, cell_strata, cell_classes)
        small = cell_counts < small_rows  # the cells of `small_cell_share`
        small_h, every_h = float(surprise[small].sum()), float(surprise.sum())
        entropy_share = small_h / every_h if every_h > 0 else 0.0
        small_slack = small_h / n if not one_sided and entropy_share >= SMALL_CELL_SHARE else 0.0
        # the same rules inside each stratum, for its own entry (an outside study: strata of 38-96
        # rows read 13-38% low inside a term whose share was under the line)
        small_strata = {}
        for code in np.unique(cell_strata):
            here = cell_strata == code
            share = small_cell_share(cell_counts[here], n_inputs)
            h_small, h_every = float(surprise[here & small].sum()), float(surprise[here].sum())
            share_h = h_small / h_every if h_every > 0 else 0.0
            if max(share, share_h) >= SMALL_CELL_SHARE:
                slack = 0.0 if share >= SMALL_CELL_SHARE else h_small / float(cell_counts[here].sum())
                small_strata[int(code)] = (share, share_h, small_rows, n_inputs, slack)
        if self.tags.critic_cells:
            where = (f"the critic's (stratum, class[, sub-class]) cells with fewer than {small_rows} rows "
                     f"(the critic's {n_inputs} inputs)")
        else:  # no critic (k-NN): the same count against this estimator's own feature dimensions
            where = (f"(stratum, class) cells with fewer than {small_rows} rows (this estimator's "
                     f"{n_inputs - 1} feature dimensions + 1)")
        widened_note = None  # dropped again where the term ends one-sided for another reason
        if one_sided:
            flags.append("small-cells")
            notes.append(f"{small_share:.0%} of rows are in {where}, where the estimator's shortfall is not "
                         "bounded: " + ONE_SIDED)
        elif small_slack:
            flags.append("small-cells-widened")
            widened_note = (f"{small_share:.0%} of rows, {entropy_share:.0%} of the label entropy, are in {where}: "
                            f"what they carry is at most their entropy, {small_slack:.4f} nats per row, and the "
                            "upper end is raised by it")
            notes.append(widened_note)
        sparse = [s for s in strata_info if not s["single"] and s["n"] < self.min_stratum]
        if sparse:
            flags.append("sparse-strata")
            notes.append("sparse strata (n < %d): " % self.min_stratum
                         + ", ".join(f"{self._stratum_words(s['code'], stratum_names)}: {s['n']} rows" for s in sparse))
        if withheld:
            where = ("" if len(strata) == 1 else " in " + ", ".join(self._stratum_words(code, stratum_names)
                                                                   for code in withheld))
            notes.append(f"learning-curve step withheld{where}: the held-out estimate before it is <= 0 (the critic "
                         "did not beat the label prior), where the step measures the half fit's overfitting; it "
                         "widens the upper end instead")
        singles = [s for s in strata_info if s["single"]]
        if singles and len(strata) > 1:
            notes.append(f"{len(singles)} strata with H(Y|C=c) = 0 contribute exactly 0")
        if value > h_upper:
            notes.append(f"raw estimate {value:.4f} nats exceeded {cap_name} = {h_upper:.4f}; clipped")
            result.clipped = True
            flags.append("clipped")
            value = h_upper
        # MI >= 0: a null is a result, never an error. The raw numbers stay in diagnostics["raw"].
        raw = (value, lo, hi)
        value, lo, hi, zero_flags, zero_notes = clip_at_zero(value, lo, hi)
        flags += zero_flags
        notes += zero_notes
        if zero_flags:
            result.clipped = True
        hi += small_slack  # the most the rows of small cells can carry (0 under both lines)
        if near_saturation(value, h_upper):
            # near H(Y|C) the shortfall comes from the penalised, not quite confident critic on
            # nearly separable classes, which the learning curve does not see (calibration, issue
            # 22: K = 8 at 95-99% of H, 0.5-2% low, 7 of 17 intervals missing): the cap H(Y|C)
            # is the only upper statement
            one_sided = True
            flags.append("near-saturated")
            # the share floored to a tenth of a percent: 99.7% is not "100%"
            share = np.floor(1000 * value / h_upper) / 10
            notes.append(f"estimate at {share:g}% of {cap_name} = {h_upper:.4f} nats: near saturation the "
                         "shortfall is not bounded, so " + ONE_SIDED)
        def take(verdict):
            # a residual test's verdict on this term (`ResidualTest.verdict`): the flag, its note,
            # and a one-sided interval or the upper end's slack
            nonlocal one_sided, hi
            if verdict is None:
                return
            if "pca-dropped-signal" not in flags:
                flags.append("pca-dropped-signal")
            notes.append(verdict.note)
            one_sided = one_sided or verdict.one_sided
            hi += verdict.slack

        residual = None
        if isinstance(plan, FoldPlan) and plan.residual is not None:
            # did the label-free reduction leave label information out? (a cross-fitted test on
            # its residual, `mi.reduction_check`: signal under the kept components' variance is
            # dropped, and every critic on the features then reads far too low)
            residual = plan.residual_test(y, c, active)
            advice = None
            if reduction is not None and reduction.stopped:
                advice = (f"; matprobe raised the PCA to {plan.pca} components and stopped there: " if reduction.raised
                          else f"; matprobe kept the PCA at {plan.pca} components: ") + reduction.stopped
            take(residual.verdict(value, hi, advice))
        kept_requested = sum(d.get("representation") == REQUESTED_PCA for d in diags if d.get("seed") == 0)
        requested_residual = None
        if kept_requested and reduction is not None:
            # folds that predicted better on the requested PCA's features read this term through
            # that reduction, so its residual test (before the raise) is the one that applies
            n_folds = sum(d.get("seed") == 0 for d in diags)
            notes.append(f"{kept_requested} of {n_folds} folds kept the requested {reduction.requested} components' "
                         "features, which predicted their validation rows better than the raised PCA's")
            requested_residual = plan.requested_tests.get(_term_key(y, c))
            if requested_residual is not None:
                take(requested_residual.verdict(value, hi, f"; the folds that kept the requested "
                                                           f"{reduction.requested} components read the term through them"))
        result.bound = LOWER if one_sided or misspecified else self.tags.bound
        if result.bound == LOWER and widened_note is not None:  # one-sided for another reason: no slack to say
            flags.remove("small-cells-widened")
            notes.remove(widened_note)
        # the upper end is capped at the population H(Y|C)'s upper confidence limit, not at the
        # sample's plug-in H(Y|C): with imbalanced classes near saturation the truth lay above
        # the plug-in, and a cap there could not cover (RESULTS.md, issue 22 thirteenth session)
        h_limit = max(conditional_entropy_upper(y, c, self.ci_level), h_upper)
        lo, hi = min(lo, h_upper), min(hi, h_limit)
        if result.bound == LOWER:
            hi = h_limit  # one-sided: only the lower end is a statement
        result.value, result.ci_low, result.ci_high = (from_nats(v, self.unit) for v in (value, lo, hi))
        result.n_train = int(round(n * (self.folds - 1) / self.folds))
        result.strata = self._strata_entries(strata_info, stratum_vals, stratum_names,
                                             one_sided=result.bound == LOWER, small=small_strata)
        if result.bound != LOWER:
            raised = _raise_to_one_sided_strata(result, n, from_nats(h_limit, self.unit))
            if raised:
                flags.append("one-sided-strata")
                notes.append(raised)
        result.note = join_notes(notes)
        result.flags = flags
        train_vals = [d.get("train_value") for d in diags if d.get("train_value") is not None]
        result.diagnostics = {
            "seed_values": [from_nats(v, self.unit) for v in seed_vals],
            # each seed's interval, capped as the term's is (one-sided: only its lower end)
            "seed_intervals": [(from_nats(min(max(a, 0.0), h_upper), self.unit),
                                from_nats(h_limit if result.bound == LOWER else min(max(b, 0.0), h_limit),
                                          self.unit))
                               for a, b in seed_intervals],
            "train_heldout_gap": (from_nats(float(np.mean(train_vals)) - value, self.unit)
                                  if train_vals else None),
            "folds": diags,
            "raw": tuple(from_nats(v, self.unit) for v in raw),
            "reduction_residual": None if residual is None else residual.to_dict(),
            # the requested size's test, where folds kept its features (None: none did)
            "requested_reduction_residual": None if requested_residual is None else requested_residual.to_dict(),
            "reduction": (reduction.to_dict() if reduction is not None and (reduction.raised or reduction.stopped)
                          else None),
            # the cap of the upper end: the population H(Y|C)'s upper confidence limit
            "h_upper_limit": from_nats(h_limit, self.unit),
            "seconds": time.perf_counter() - t0,
        }
        if pointwise:
            result.diagnostics["pointwise"] = pointwise_out
        return result

    @staticmethod
    def _sname(code, names):
        return names.get(code, str(code)) if names else str(code)

    @staticmethod
    def _stratum_words(code, names) -> str:
        """A stratum's name in a note: "Ultrasound / Abdomen" where its name is a mapping of factor to
        label (a study read "sparse strata (n < 30): {'M': 'Ultrasound', 'A': 'Abdomen'}: 25 rows")."""
        return _given_words(names.get(code, str(code)) if names else str(code))

    def _strata_entries(self, info, vals, names, one_sided: bool = False,
                        small: dict | None = None) -> list[StratumEstimate]:
        """One entry per stratum: the estimate and lower end clipped to [0, the stratum's plug-in
        H(Y|C=c)], the upper end capped at its entropy's upper confidence limit (`h_limit`), as
        the term's is. An entry is one-sided (`bound` "lower", its upper end that limit) where the
        term is, and where the term's own reasons hold in the stratum alone: its estimate near
        saturation of H(Y|C=c) (`near_saturation`; an outside study's two-class stratum at 97-99%
        of log 2 missed its truth in 8 of 8 two-sided intervals), or its critic cells small
        (`small`: {code: (share, entropy share, rows, inputs, slack)}, the "small-cells" rule within
        the stratum; a slack in nats where only its entropy share is over the line: the upper end is
        raised by it instead)."""
        out = []
        small = small or {}
        for s in info:
            v = vals.get(s["code"])
            given = self._sname(s["code"], names)
            if s["single"]:
                out.append(StratumEstimate(given, s["n"], 0.0, 0.0, 0.0, 0.0, "one class in this stratum: exactly 0"))
                continue
            est, lo = (min(max(x, 0.0), s["h"]) for x in v[:2])
            why = ""
            if near_saturation(est, s["h"]):
                why = f"near saturation, {est / s['h']:.0%} of H(Y|C=c)"
            slack = 0.0
            if not why and s["code"] in small:
                share, share_h, rows, inputs, slack = small[s["code"]]
                if not slack:
                    why = f"{share:.0%} of its rows in cells with fewer than {rows} rows ({inputs} critic inputs)"
            lower = one_sided or bool(why)
            hi = s["h_limit"] if lower else min(max(v[2], 0.0) + slack, s["h_limit"])
            note = "; ".join(part for part in (
                "sparse" if s["n"] < self.min_stratum else "", "clipped" if v[0] > s["h"] else "",
                "clipped at 0" if v[0] < 0 else "",
                ("lower bound" + (f" ({why})" if why and not one_sided else "")
                 + ": ci_high is H(Y|C=c)'s upper confidence limit") if lower else "",
                (f"upper end raised by {slack:.4f} nats, the entropy of its rows in cells with fewer than {rows} "
                 f"rows ({share_h:.0%} of H(Y|C=c))") if slack and not lower else "") if part)
            out.append(StratumEstimate(given, s["n"], from_nats(est, self.unit), from_nats(lo, self.unit),
                                       from_nats(hi, self.unit), from_nats(s["h"], self.unit), note,
                                       LOWER if lower else TWO_SIDED))
        return out

    def fit_fold_seeds(self, x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seeds,
                       alternatives: dict | None = None, unmapped=None) -> list[FoldOutput]:
        """One FoldOutput per seed for one fold. Override to share work between a fold's seeds
        (the probe shares its penalty search and refit); by default, one fit_fold per seed.
        alternatives: {name: (x_tr, x_ev)}, other label-free representations of the same rows
        (`FoldPlan.requested_features`) an estimator may choose among on its training rows; the
        default ignores them. A fold that uses one says so in its diagnostics' "representation".
        unmapped: None, or a callable giving (x_tr, x_ev) of the plan's reduction without the
        quantile map (`FoldPlan.unmapped`), computed on first call; the default ignores it."""
        return [self.fit_fold(x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seed=seed) for seed in seeds]

    def _run_folds(self, z, y, c, sub, active, plan):
        """Folds outer, seeds inner; seed s of fold f is seeded 1000 * (seed + s) + f."""
        n = len(y)
        per_seed: list[dict[str, np.ndarray]] = [{} for _ in range(self.seeds)]
        diags = []
        # fits the plan's terms can share (`FoldPlan.fits`), while this term's folds run
        self.shared_fits = plan.fits if isinstance(plan, FoldPlan) else None
        try:
            requested = plan.requested_features if isinstance(plan, FoldPlan) else None
            # an estimator whose fit_fold_seeds predates `unmapped` (a subclass's override) is not given it
            takes = inspect.signature(self.fit_fold_seeds).parameters
            takes_unmapped, takes_base = "unmapped" in takes, "unmapped_base" in takes
            for f in range(plan.k):
                x = plan.transformed(z, f)
                tr = active & (plan.fold != f)
                ev = active & (plan.fold == f)
                if not ev.any():
                    continue
                seeds = [1000 * (self.seed + s) + f for s in range(self.seeds)]
                extra = {} if requested is None else {"alternatives": {REQUESTED_PCA: (requested[tr], requested[ev])}}
                if takes_unmapped and isinstance(plan, FoldPlan) and plan.gaussianize and not plan.per_fold:
                    extra["unmapped"] = partial(_unmapped_rows, plan, z, tr, ev)  # computed only if asked
                    if takes_base and plan.residual is None and requested is None:
                        # nothing was reduced (every coordinate kept): the same rows, offered as a base
                        extra["unmapped_base"] = extra["unmapped"]
                units = plan.units if isinstance(plan, FoldPlan) else None
                self.row_groups = None if units is None else units[tr]
                outs = self.fit_fold_seeds(x[tr], y[tr], c[tr], sub[tr], x[ev], y[ev], c[ev], seeds, **extra)
                for s, out in enumerate(outs):
                    for key, val in out.arrays.items():
                        per_seed[s].setdefault(key, np.zeros(n))[ev] = val
                    diags.append({"seed": s, "fold": f, **out.diagnostics})
        finally:
            self.shared_fits = None
            self.row_groups = None
        self.pool_folds(per_seed, diags, plan.fold)
        return per_seed, diags

    def pool_folds(self, per_seed: list[dict[str, np.ndarray]], diags: list[dict], fold: np.ndarray) -> None:
        """Hook: what an estimator learns from all of a term's folds and seeds together (`fold`:
        each row's held-out fold), applied to their per-row arrays in place (the probe's
        learning-curve exponent); none here."""

    shared_fits: dict | None = None  # `FoldPlan.fits` while `_run_folds` runs, else None
    # the fitting rows' groups (`FoldPlan.units` over a fold's training rows) while `_run_folds`
    # fits that fold, else None: splits inside a fold keep a group's rows on one side
    row_groups: np.ndarray | None = None

    def _aggregate(self, per_seed, y, c, active, info, n, row_weights: dict | None = None,
                   units: np.ndarray | None = None):
        """The term's estimate and intervals from its per-row arrays; row_weights: the plan's
        cache of bootstrap row weights (`bootstrap_row_weights`), or None. units: a group per row
        (`FoldPlan.units`) or None: where a stratum holds groups of several rows the bootstrap
        draws groups, each group's rows together (copies of an item are one draw, not several
        independent ones: drawn by row, the interval was as narrow as if they were)."""
        if units is not None:
            row_weights = None  # the cache's keys follow the row draws' stream
        seed_key = (self.seed, 104729)
        rng = np.random.default_rng(list(seed_key))
        B = self.n_boot
        total = np.zeros((len(per_seed), B + 1))
        strat_reps = {}
        drawn = ()  # the sizes of the strata drawn so far: with the seed and B they fix the stream
        for s in info:
            if s["single"]:
                continue
            idx = np.flatnonzero((c == s["code"]) & active)
            n_c = len(idx)
            drawn += (n_c,)
            groups_here, unit_of_row = (None, None) if units is None else np.unique(units[idx], return_inverse=True)
            if groups_here is not None and len(groups_here) < n_c:
                w = bootstrap_row_weights(rng, len(groups_here), B)[:, unit_of_row.reshape(-1)]
                wsum = w.sum(axis=1)
            else:
                w = bootstrap_row_weights(rng, n_c, B, row_weights, (seed_key, B, drawn))
                wsum = np.full(B + 1, float(n_c))  # each row of w sums to n_c exactly
            reps = np.stack([stratum_values(self.kind, {k: v[idx] for k, v in arr.items()}, w, wsum)
                             for arr in per_seed])  # [seeds, B+1]
            total += reps * (n_c / n)
            strat_reps[s["code"]] = reps
        seed_vals = total[:, 0]
        value = float(seed_vals.mean())
        lo, hi = self._interval(total)
        # a bias correction by learning-curve extrapolation (probe) assumes bias ~ 1/n; for the
        # unknown exponent EXTRAPOLATION_SLACK times the correction is added to both sides
        slack, strat_slack = 0.0, {}
        seed_slack = np.zeros(len(per_seed))
        # ... and where the ladder chose a non-linear level, LADDER_SLACK times its gain over
        # the linear level is added to the upper side
        up, strat_up = 0.0, {}
        seed_up = np.zeros(len(per_seed))
        for s in info:
            if s["single"]:
                continue
            idx = np.flatnonzero((c == s["code"]) & active)
            if "corr" in per_seed[0]:
                corr_means = np.array([a["corr"][idx].mean() for a in per_seed])
                strat_slack[s["code"]] = EXTRAPOLATION_SLACK * abs(float(corr_means.mean()))
                slack += strat_slack[s["code"]] * len(idx) / n
                seed_slack += EXTRAPOLATION_SLACK * np.abs(corr_means) * len(idx) / n
            if "level_gap" in per_seed[0]:
                gaps = np.maximum([a["level_gap"][idx].mean() for a in per_seed], 0.0)
                strat_up[s["code"]] = LADDER_SLACK * float(gaps.mean())
                up += strat_up[s["code"]] * len(idx) / n
                seed_up += LADDER_SLACK * gaps * len(idx) / n
            if any("penalty_gap" in a for a in per_seed):
                # a stratum fitted at a penalty chosen on every stratum's rows: what its own best
                # penalty gained on its validation rows (`probe._LinearPath.stratum_gaps`). Folds
                # without it (one stratum there, or the non-linear level) contribute 0
                gaps = np.maximum([a["penalty_gap"][idx].mean() if "penalty_gap" in a else 0.0
                                   for a in per_seed], 0.0)
                strat_up[s["code"]] = strat_up.get(s["code"], 0.0) + float(gaps.mean())
                up += float(gaps.mean()) * len(idx) / n
                seed_up += gaps * len(idx) / n
            if "step_withheld" in per_seed[0]:
                # the learning-curve step taken back from the point (`withhold_unsupported_steps`)
                steps = np.maximum([a["step_withheld"][idx].mean() for a in per_seed], 0.0)
                strat_up[s["code"]] = strat_up.get(s["code"], 0.0) + float(steps.mean())
                up += float(steps.mean()) * len(idx) / n
                seed_up += steps * len(idx) / n
        lo, hi = lo - slack, hi + slack + up
        # each seed's own interval (its row bootstrap and its own slacks)
        seed_intervals = []
        for s_i in range(len(per_seed)):
            l_, h_ = self._interval(total[s_i : s_i + 1])
            seed_intervals.append((l_ - seed_slack[s_i], h_ + seed_slack[s_i] + seed_up[s_i]))
        stratum_vals = {}
        for code, reps in strat_reps.items():
            l_, h_ = self._interval(reps)
            sl = strat_slack.get(code, 0.0)
            stratum_vals[code] = (float(reps[:, 0].mean()), l_ - sl, h_ + sl + strat_up.get(code, 0.0))
        return value, lo, hi, stratum_vals, seed_vals, seed_intervals

    def _interval(self, reps):
        """Percentile bootstrap of the seed-mean, widened in quadrature by the seed spread."""
        alpha = 1.0 - self.ci_level
        point = reps[:, 0].mean()
        boot = reps[:, 1:].mean(axis=0)
        q_lo, q_hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
        spread = 0.0
        if reps.shape[0] > 1:
            spread = ndtri(1 - alpha / 2) * reps[:, 0].std(ddof=1) / np.sqrt(reps.shape[0])
        lo = point - np.hypot(max(point - q_lo, 0.0), spread)
        hi = point + np.hypot(max(q_hi - point, 0.0), spread)
        return float(lo), float(hi)
