"""Layer sweeps: every (checkpoint, layer, pool) cell's MI chain terms in one tidy table.

The grid is stores x layers x pools; each cell estimates every chain term over the factors
(I(Z;M), I(Z;A|M), I(Z;T|M,A) for M,A,T; CrossMed §IV eq. 5) with one fold plan, so PCA runs
once per fold per cell. Each finished cell is added to the results file at once (written to a
temporary name and renamed), so an interrupted sweep resumes where it stopped: cells already
in the file are not recomputed. Per-row held-out terms of every estimate are kept with the
sample ids in `<out>.pointwise/` for paired comparisons (`matprobe.mi.compare`).

Parallelism: `jobs` worker processes on one machine (one torch thread each: two threads
thrash on a shared 2-core CPU, docs/design.md §2), and across machines by sharding the cell grid
over torchrun ranks (`matprobe.parallel`, as extraction does); each rank
writes `<out>.shards/rank<r>-of-<w><suffix>` and rank 0 merges them into `out`. Every cell is
seeded by its settings alone, so the table does not depend on which process computed it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from matprobe.checks import check_factors, check_level, check_pca, check_rare_classes
from matprobe.defaults import DEFAULTS
from matprobe.errors import EstimationError, StoreError
from matprobe.locks import locked_output
from matprobe.mi.base import settled_pca
from matprobe.mi.controls import baseline_columns
from matprobe.mi.interface import LOWER, ONE_SIDED, TWO_SIDED
from matprobe.mi.registry import estimator_tags, make_estimator, registration
from matprobe.numerics import MARKER
from matprobe.parallel import init_ranks
from matprobe.provenance import check_finished_cells
from matprobe.store_checks import store_content_ids
from matprobe.units import NATS, check_unit

FORMATS = (".csv", ".json", ".parquet")
COLUMNS = ["checkpoint", "store", "fingerprint", "layer", "pool", "term", "target", "given", "estimator",
           "estimate", "ci_low", "ci_high", "bound", "ci_level", "unit", "n", "h_upper", "clipped", "degenerate",
           "note", "seconds", "settings", "flags", "pca", "options"]
# `options`: the settings only the digest holds, readable ("seeds=2 folds=3 pca=64 seed=0"; `SweepSettings.options`),
# so a refused resume can say what the table was made with; "" in tables written before it
# `bound`: "two-sided", or "lower" where only ci_low is a statement (ci_high is then the entropy
# cap's upper limit: mi.interface.ONE_SIDED); empty on a failed cell
# baseline columns the table keeps (issue 25; values from mi.controls.baseline_columns), present when the
# sweep ran them: the control task's selectivity with its interval, the online codelength's compression,
# the permutation p-value and the excess over the null
BASELINE_COLUMNS = ["control", "selectivity", "selectivity_low", "selectivity_high", "online_bits",
                    "uniform_bits", "compression", "p_perm", "excess"]
# a cell whose estimation failed is written with NaN estimates and this flag, and retried on a rerun
FAILED = "failed"
CELL_KEY = ["store", "layer", "pool"]


@dataclass(frozen=True)
class SweepSettings:
    factors: tuple[str, ...] = ("M", "A", "T")
    estimator: str = "probe"
    seeds: int = DEFAULTS.seeds
    folds: int = 5
    pca: int | None = DEFAULTS.pca
    seed: int = 0
    ci_level: float = DEFAULTS.level
    unit: str = NATS
    pointwise: bool = True
    estimator_kwargs: tuple = ()  # sorted (name, value) pairs, e.g. (("max_iter", 50),)
    # baselines per term (matprobe.mi.controls, codelength): they change the table, so the digest has them
    controls: bool = False
    codelength: bool = False
    permutations: int = 0
    rare_classes: str = "refuse"  # or "merge" (matprobe.mi.chain.merge_rare_classes)

    def digest(self) -> str:
        """Short hash of everything that changes the numbers (not `pointwise`)."""
        d = asdict(self)
        d.pop("pointwise")
        for key in ("controls", "codelength", "permutations"):  # absent when off: older digests still match
            if not d[key]:
                d.pop(key)
        if d["rare_classes"] == "refuse":
            d.pop("rare_classes")
        # the estimator's full parameters (its fitting scheme included), so a table written by
        # an older fitting scheme is not silently resumed with new cells
        kwargs = dict(self.estimator_kwargs)
        d["estimator_params"] = make_estimator(self.estimator, seeds=self.seeds, folds=self.folds,
                                                     pca=self.pca, **kwargs).params()
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def options(self) -> str:
        """The settings a table's rows show only in its digest, as `name=value` words (the `options`
        column; `parse_options` reads them back): seeds, folds, PCA (0 = none), seed, and, where not
        at their defaults, rare classes, the permutation count and the estimator's parameters."""
        words = [f"seeds={self.seeds}", f"folds={self.folds}", f"pca={self.pca or 0}", f"seed={self.seed}"]
        if self.rare_classes != "refuse":
            words.append(f"rare_classes={self.rare_classes}")
        if self.permutations:
            words.append(f"permutations={self.permutations}")
        words += [f"{k}={v}" for k, v in self.estimator_kwargs]
        return " ".join(words)


@dataclass(frozen=True)
class Cell:
    store: str
    checkpoint: str
    layer: str
    pool: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.store, self.layer, self.pool)


# ---------------------------------------------------------------------- grid

def _layer_order(layer: str):
    return (0, int(layer)) if layer.lstrip("-").isdigit() else (1 if layer == "final" else -1, layer)


def parse_list(spec) -> list[str] | None:
    """'all' / None -> None (everything stored); '8,16,-1' -> ['8', '16', '-1']."""
    if spec is None:
        return None
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not items or items == ["all"]:
        return None
    return [str(s) for s in items]


def _resolve_layers(want, stored_layers, provenance, path) -> list[str]:
    """Requested layers as stored keys; negative indices count from the model's last block."""
    from matprobe.store import resolve_layer

    if want is None:
        return sorted(stored_layers, key=_layer_order)
    # the one resolution every command uses (negative = from the end of the decoder)
    return list(dict.fromkeys(resolve_layer(w, stored_layers, provenance, path, "--layers") for w in want))


def build_grid(stores, layers=None, pools=None, factors=("M", "A", "T")) -> list[Cell]:
    """All cells in table order; refuses a missing layer/pool or factor in any store (one line)."""
    from matprobe.store import EmbeddingStore, checkpoint_labels

    want_layers, want_pools = parse_list(layers), parse_list(pools)
    cells, provenances = [], {}
    first, first_labels = None, {}  # the first store, and its labels by id once read (every other store's check)
    for path in stores:
        path = str(path)
        with EmbeddingStore.open(path) as st:
            keys = [(str(a), str(b)) for a, b in st.feature_keys()]
            if not keys:
                raise StoreError(f"{path}: no features stored; run `matprobe extract` first")
            for f in factors:
                try:
                    codes, vocab = st.factor(f)
                except StoreError:
                    raise StoreError(f"{path}: no label column {f!r} for --factors; have "
                                     f"{', '.join(st.label_columns())}") from None
                classes = np.unique(codes[codes >= 0])
                if classes.size == 1:  # every cell would fail alike, and a rerun would not help
                    rest = ",".join(g for g in factors if g != f)
                    raise StoreError(f"{path}: factor {f!r} has one class ({str(vocab[int(classes[0])])!r}), so every "
                                     f"term with {f} as the target is 0 by definition; drop it from --factors"
                                     + (f" (--factors {rest})" if rest else ""))
            st.require_complete("sweeping it")
            prov = st.provenance
            if first is None:
                first = path
            else:
                # every store against the first, not only where the fingerprint (ids and M, A, T) differs:
                # the answers' label is a factor too (a sweep took stores whose answers differed)
                _refuse_other_dataset(first, path, st, factors, ref_labels=first_labels)
            stored_layers = sorted({a for a, _ in keys}, key=_layer_order)
            lays = _resolve_layers(want_layers, set(stored_layers), prov, path)
            provenances[path] = prov
            for layer in lays:
                stored_pools = [b for a, b in keys if a == layer]
                pls = want_pools if want_pools is not None else stored_pools
                for pool in pls:
                    if pool not in stored_pools:
                        raise StoreError(f"{path}: no features for layer {layer!r}, pool {pool!r}; pools stored "
                                         f"for that layer: {', '.join(stored_pools)}; change --pools or --layers")
                    cells.append(Cell(path, "", layer, pool))
    names = checkpoint_labels(provenances)  # over every store of the table: alike stores named alike
    return [replace(c, checkpoint=names[c.store]) for c in cells]


def _refuse_other_dataset(first: str, path: str, st, factors, where: str = "", ref_labels: dict | None = None) -> None:
    """Stores of one sweep must hold the same samples and labels (one dataset), else one line. The
    same samples listed in another order (the items file sorted anew) are the same dataset: each
    cell is estimated on its own store, so the order only moves the folds. `ref_labels`: a dict the
    first store's labels by id are kept in, read once for all the stores checked against it."""
    from matprobe.store import EmbeddingStore

    def by_id(store) -> dict[str, tuple]:
        ids = store.ids.astype(str).tolist()
        cols = []
        for f in factors:
            codes, vocab = store.factor(f)
            names = np.asarray([str(v) for v in vocab] + [""], dtype=object)
            cols.append(names[codes])
        return {i: tuple(str(c[k]) for c in cols) for k, i in enumerate(ids)}

    if ref_labels:
        labels_a = ref_labels
    else:
        with EmbeddingStore.open(first) as ref:
            labels_a = by_id(ref)
        if ref_labels is not None:
            ref_labels.update(labels_a)
    labels_b = by_id(st)
    ids_a, ids_b = set(labels_a), set(labels_b)
    if ids_a != ids_b:
        detail = f"{len(ids_b - ids_a)} ids not in {first}, {len(ids_a - ids_b)} of its ids missing"
    else:
        differ = [i for i in labels_a if labels_a[i] != labels_b[i]]
        if not differ:  # one dataset, its rows in another order, if its records (questions, images) agree too
            from matprobe.provenance import check_same_records

            with EmbeddingStore.open(first) as ref:
                check_same_records(ref, st)
            return
        i = differ[0]
        detail = (f"the same ids, {len(differ)} of them labelled differently (first: id {i!r}: "
                  f"{', '.join(labels_a[i])} vs {', '.join(labels_b[i])})")
    raise StoreError(f"{path} comes from another dataset than {first}{where} ({detail}); sweep checkpoints "
                     "extracted from the same dataset file, or run one sweep per dataset"
                     + (" (another --out)" if where else ""))


# ---------------------------------------------------------------------- one cell

def term_list(factors) -> list[tuple[str, list[str]]]:
    return [(f, list(factors[:j])) for j, f in enumerate(factors)]


def estimate_cell(cell: Cell, settings: SweepSettings, pointwise_dir: str | None = None,
                  threads: int | None = 1, registration=None) -> list[dict[str, Any]]:
    """Every chain term of one cell (`chain_terms` on the cell's features); writes its pointwise
    file first when asked. Picklable; `registration` carries a plug-in estimator's registration
    into worker processes that did not import the plug-in."""
    import torch

    from matprobe.mi.chain import chain_terms, note_in_unit, store_groups
    from matprobe.mi.registry import register_estimator
    from matprobe.store import EmbeddingStore
    from matprobe.units import from_nats

    if registration is not None:
        register_estimator(registration.name, registration.factory, registration.tags,
                           summary=registration.summary, replace=True)
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with EmbeddingStore.open(cell.store) as st:
        cols, vocab = {}, {}
        for f in settings.factors:
            cols[f], vocab[f] = st.factor(f)
        z = st.read(cell.layer, cell.pool)
        ids = st.ids.astype(str)
        fingerprint = st.content_id  # what the rows are, checked on resume (matprobe.provenance)
        groups, groups_name = store_groups(st.samples(), None, cell.store)  # each image one item, as in `mi`
    keep = np.ones(len(ids), dtype=bool)
    for f in settings.factors:
        keep &= cols[f] >= 0  # rows without this label take no part
    if not keep.all():  # a copy of the cell's features only when rows drop out
        z, ids = z[keep], ids[keep]
    for f, v in cols.items():
        if np.unique(v[keep]).size < 2:
            raise EstimationError(f"{cell.store}: factor {f!r} has one class; I(Z;{f}) is 0 by definition: "
                                  "drop it from --factors")
    pointwise = settings.pointwise and estimator_tags(settings.estimator).pointwise
    grouping = {} if groups is None else {"groups": groups[keep], "groups_name": groups_name}
    res = chain_terms(z, {f: v[keep] for f, v in cols.items()}, order=list(settings.factors),
                      estimators=[settings.estimator], seeds=settings.seeds, folds=settings.folds,
                      pca=settings.pca, unit=NATS, direct=False, difference=False,
                      ci_level=settings.ci_level, seed=settings.seed, pointwise=pointwise,
                      controls=settings.controls, codelength=settings.codelength,
                      permutations=settings.permutations, rare_classes=settings.rare_classes, labels=vocab,
                      **grouping, **dict(settings.estimator_kwargs))
    rows, pw = [], {"ids": ids}
    unit = settings.unit
    for (target, given), (name, e) in zip(term_list(list(settings.factors)), res.terms[settings.estimator]):
        if pointwise and "pointwise" in e.diagnostics:
            p = e.diagnostics["pointwise"]
            pw[f"{name}/values"] = p["values"].astype(np.float32)
            if "corr" in p:
                pw[f"{name}/corr"] = p["corr"].astype(np.float32)
        rows.append({"checkpoint": cell.checkpoint, "store": cell.store, "fingerprint": fingerprint,
                     "layer": cell.layer, "pool": cell.pool, "term": name, "target": target,
                     "given": ",".join(given), "estimator": settings.estimator,
                     "estimate": from_nats(e.value, unit),
                     "ci_low": from_nats(e.ci_low, unit), "ci_high": from_nats(e.ci_high, unit),
                     "bound": e.bound, "ci_level": e.ci_level, "unit": unit, "n": int(e.n_eval),
                     "h_upper": from_nats(e.h_upper, unit), "clipped": bool(e.clipped),
                     # the note's numbers in the table's unit, as `mi` writes them
                     "degenerate": bool(e.degenerate),
                     "note": note_in_unit(e.note, unit, (from_nats(e.h_upper, unit), from_nats(e.value, unit))),
                     "seconds": 0.0,
                     "settings": settings.digest(), "flags": ",".join(e.flags),
                     "pca": settled_pca(e.diagnostics, settings.pca), "options": settings.options(),
                     # the cell is estimated in nats: information-valued baselines in the table's unit
                     **baseline_columns(e.diagnostics, convert=lambda v: from_nats(v, unit))})
    seconds = time.perf_counter() - t0
    for r in rows:
        r["seconds"] = round(seconds / len(rows), 3)
    if pointwise and pointwise_dir is not None:
        write_pointwise(Path(pointwise_dir) / pointwise_name(cell), pw)
    return rows


def _columns(df_or_rows) -> list[str]:
    """COLUMNS plus the baseline columns present (in their order)."""
    present = set(df_or_rows.columns) if isinstance(df_or_rows, pd.DataFrame) else \
        {k for r in df_or_rows for k in r}
    return COLUMNS + [c for c in BASELINE_COLUMNS if c in present]


def failed_rows(cell: Cell, settings: SweepSettings, exc: BaseException, seconds: float = 0.0) -> list[dict]:
    """One row per term of a cell whose estimation raised: NaN estimates, flag `failed`, the
    reason in `note`. One cell's trouble never sinks a sweep; a rerun retries these cells."""
    from matprobe.errors import MatprobeError
    from matprobe.mi.chain import term_name

    reason = " ".join(str(exc).split()) or type(exc).__name__
    # a refusal of the data or settings fails alike on every rerun: its fix, not a retry
    then = ("do what it says, then rerun the sweep (with --overwrite where that changes a setting)"
            if isinstance(exc, MatprobeError) else "rerun the sweep to retry")
    rows = []
    for target, given in term_list(list(settings.factors)):
        rows.append({"checkpoint": cell.checkpoint, "store": cell.store, "fingerprint": "",
                     "layer": cell.layer, "pool": cell.pool, "term": term_name(target, given),
                     "target": target, "given": ",".join(given), "estimator": settings.estimator,
                     "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan, "bound": "",
                     "ci_level": settings.ci_level,
                     "unit": settings.unit, "n": 0, "h_upper": np.nan, "clipped": False, "degenerate": False,
                     "note": f"estimation failed ({type(exc).__name__}: {reason}); {then}",
                     "seconds": round(seconds, 3), "settings": settings.digest(), "flags": FAILED,
                     "pca": 0 if settings.pca is None else int(settings.pca),  # as asked: nothing settled
                     "options": settings.options()})
    return rows


def safe_estimate_cell(cell: Cell, settings: SweepSettings, pointwise_dir: str | None = None,
                       threads: int | None = 1, registration=None) -> list[dict[str, Any]]:
    """`estimate_cell`, with any failure turned into the cell's `failed_rows` (picklable)."""
    t0 = time.perf_counter()
    try:
        return estimate_cell(cell, settings, pointwise_dir, threads, registration)
    except (KeyboardInterrupt, SystemExit, OSError):
        # OSError: the disk, a file-size limit, permissions - the machine's trouble, not the cell's;
        # every later cell would meet it too, so it ends the sweep with its one error line
        raise
    except Exception as exc:  # noqa: BLE001 - one cell's trouble never sinks a sweep (issue 22)
        return failed_rows(cell, settings, exc, time.perf_counter() - t0)


def pointwise_name(cell: Cell) -> str:
    tag = hashlib.sha256(cell.store.encode()).hexdigest()[:8]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cell.checkpoint)[:60]
    return f"{safe}-{tag}__{cell.layer}__{cell.pool}.npz"


def write_pointwise(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from matprobe.io import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_pointwise(path) -> dict[str, np.ndarray]:
    """{'ids': [n], '<term>/values': [seeds, n], '<term>/corr': ...} of one cell."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# ---------------------------------------------------------------------- results file

def check_out(out) -> Path:
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise EstimationError(f"--out {out}: use a .csv, .json or .parquet file name")
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise EstimationError(f"--out {out}: Parquet needs the pyarrow package (pip install pyarrow); "
                                  "or write .csv/.json") from None
    return out


NUMERIC_COLUMNS = ("estimate", "ci_low", "ci_high", "ci_level", "h_upper", "n", "seconds", "selectivity",
                   "selectivity_low", "selectivity_high", "control", "excess", "online_bits", "uniform_bits",
                   "compression", "p_perm")


def read_table(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    try:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            df = pd.read_csv(path, dtype={"layer": str, "pool": str, "given": str, "note": str,
                                          "store": str, "checkpoint": str, "settings": str, "flags": str,
                                          "options": str},
                             keep_default_na=False, na_values={"estimate": ["nan"]})
        elif suffix == ".json":
            doc = json.loads(path.read_text())
            df = pd.DataFrame(doc["rows"], columns=doc.get("columns") or COLUMNS)
        else:
            df = pd.read_parquet(path)
    except (ValueError, KeyError, OSError) as exc:
        raise EstimationError(f"{path}: cannot read as a sweep results file ({exc}); "
                              "move it away or pass another --out") from None
    # a failed cell's empty numbers (keep_default_na keeps "" as text) would make its columns text,
    # and every estimate of a resumed table print at full length
    for col in NUMERIC_COLUMNS:
        if col in df.columns and not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
    if "flags" not in df.columns and len(df.columns):
        df["flags"] = ""  # tables written before the flags column
    if "pca" not in df.columns and len(df.columns):
        df["pca"] = ""  # tables written before the pca column (their settings differ: recomputed)
    if "options" not in df.columns and len(df.columns):
        df["options"] = ""  # tables written before the options column (a refusal finds them from the digest)
    if "options" in df.columns:
        df["options"] = df["options"].fillna("").astype(str)
    if "bound" not in df.columns and len(df.columns) and "note" in df.columns:
        # tables written before the bound column: one-sided terms said so in their note
        df["bound"] = [_bound_from_note(n, bad) for n, bad in zip(df["note"].astype(str), _failed(df))]
    if "flags" in df.columns:
        df["flags"] = df["flags"].fillna("").astype(str)
    if "bound" in df.columns:
        df["bound"] = df["bound"].fillna("").astype(str)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise EstimationError(f"{path}: not a sweep results file (no column {missing[0]!r}); "
                              "pass another --out")
    df["layer"] = df["layer"].astype(str)
    return df[_columns(df)]


def _bound_from_note(note: str, failed: bool) -> str:
    """The `bound` of a row of a table written before that column, from its note: every one-sided
    term's note holds `ONE_SIDED` (or, after the first, "one-sided (as above)"); a failed cell has none."""
    if failed:
        return ""
    return LOWER if (ONE_SIDED in note or "one-sided" in note) else TWO_SIDED


def write_table(df: pd.DataFrame, path) -> None:
    from matprobe.io import atomic_path

    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        suffix = path.suffix.lower()
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".json":
            doc = {"kind": "matprobe.sweep", "format_version": 1, "columns": _columns(df),
                   "rows": json.loads(df.to_json(orient="records"))}
            tmp.write_text(json.dumps(doc, indent=1))
        else:
            df.to_parquet(tmp, index=False)


def _sort(df: pd.DataFrame, cells: list[Cell], factors) -> pd.DataFrame:
    pos = {c.key: i for i, c in enumerate(cells)}
    terms = {t: j for j, t in enumerate(df["term"].drop_duplicates())}
    from matprobe.mi.chain import term_name

    for j, (t, g) in enumerate(term_list(list(factors))):
        terms[term_name(t, g)] = j
    order = [(pos.get((r.store, r.layer, r.pool), 1 << 30), terms.get(r.term, 99))
             for r in df.itertuples()]
    idx = sorted(range(len(df)), key=lambda i: order[i])
    return df.iloc[idx].reset_index(drop=True)


def _failed(df: pd.DataFrame) -> pd.Series:
    return df["flags"].astype(str).str.split(",").apply(lambda f: FAILED in f)


_UNSEARCHED = object()  # `settings_differences`' table settings not given: found here


def settings_differences(df: pd.DataFrame, settings: SweepSettings | None, table=_UNSEARCHED) -> list[str]:
    """What a table's rows record that differs from `settings` ("unit bits in the table, nats asked"):
    the unit, estimator, interval level, chain and baselines; then the settings only the digest holds
    (seeds, folds, PCA, seed, rare classes, the estimator's parameters), read from the `options`
    column or, in tables written before it, found by the digest (`table_settings`; `table`: its result
    where the caller has it, a search of a second or so not run twice)."""
    if settings is None or df.empty:
        return []
    out = []

    def recorded(column):
        return [str(v) for v in dict.fromkeys(df[column].dropna())] if column in df else []

    for column, asked in (("unit", settings.unit), ("estimator", settings.estimator)):
        have = recorded(column)
        if have and have != [str(asked)]:
            out.append(f"{column} {', '.join(have)} in the table, {asked} asked")
    levels = sorted({float(v) for v in df["ci_level"].dropna()}) if "ci_level" in df else []
    if levels and any(abs(v - settings.ci_level) > 1e-12 for v in levels):
        out.append(f"level {', '.join(f'{v:g}' for v in levels)} in the table, {settings.ci_level:g} asked")
    chain = recorded("target")
    if chain and chain != [str(f) for f in settings.factors]:
        out.append(f"factors {','.join(chain)} in the table, {','.join(settings.factors)} asked")
    for column, name, asked in (("selectivity", "controls", settings.controls),
                                ("compression", "codelength", settings.codelength),
                                ("p_perm", "permutations", settings.permutations)):
        had = column in df and df[column].notna().any()
        if bool(had) != bool(asked):
            out.append(f"{name} {'on' if had else 'off'} in the table, {'on' if asked else 'off'} asked")
    if table is _UNSEARCHED:
        table = table_settings(df, settings)
    if table is not None:
        mine, theirs = _all_options(settings), _all_options(table)
        for key in dict.fromkeys([*theirs, *mine]):
            if key == "permutations" and "0" in (theirs.get(key), mine.get(key)):
                continue  # said above as on / off
            if theirs.get(key) != mine.get(key):
                out.append(f"{key.replace('_', ' ')} {theirs.get(key, 'unset')} in the table, "
                           f"{mine.get(key, 'unset')} asked")
    return out


# option words of `SweepSettings.options` and how each is read back (the rest are the estimator's own)
_OPTION_TYPES = {"seeds": int, "folds": int, "pca": lambda v: int(v) or None, "seed": int,
                 "rare_classes": str, "permutations": int}
# what a user passes to `matprobe sweep` for each (seed has no command-line option: the API's `seed=`)
_FLAGS = {"seeds": "--seeds", "folds": "--folds", "pca": "--pca", "rare_classes": "--rare-classes",
          "permutations": "--permutations"}


def parse_options(text: str) -> dict[str, str]:
    """`SweepSettings.options` words back as {name: value} (strings, in their order)."""
    return dict(w.split("=", 1) for w in str(text).split() if "=" in w)


def _all_options(settings: SweepSettings) -> dict[str, str]:
    """`parse_options` of the settings' options with rare classes and permutations at their defaults too
    (the options' order first, the defaults where the words leave them out)."""
    words = parse_options(settings.options())
    return {**words, "rare_classes": "refuse", "permutations": "0", **words}


def _visible(df: pd.DataFrame, settings: SweepSettings) -> SweepSettings:
    """`settings` with what the table's rows show (unit, estimator, level, chain, baselines) as the table has it."""
    first = df.iloc[0]
    chain = [str(v) for v in dict.fromkeys(df["target"].dropna())] if "target" in df else []
    return replace(settings, unit=str(first.get("unit", settings.unit)),
                   estimator=str(first.get("estimator", settings.estimator)),
                   ci_level=float(first.get("ci_level", settings.ci_level)),
                   factors=tuple(chain) or settings.factors,
                   controls="selectivity" in df and bool(df["selectivity"].notna().any()),
                   codelength="compression" in df and bool(df["compression"].notna().any()),
                   permutations=settings.permutations if "p_perm" in df and df["p_perm"].notna().any() else 0)


def table_settings(df: pd.DataFrame, settings: SweepSettings) -> SweepSettings | None:
    """The settings a table was written with, as far as they can be known: its `options` column
    (tables written since it exists), else the settings near `settings` whose digest is the table's
    (`_search_digest`); None where neither says (another version's fitting, or settings further away)."""
    digests = sorted(set(df["settings"].astype(str)))
    if len(digests) != 1 or df.empty:
        return None
    digest = digests[0]
    base = _visible(df, settings)
    words = [w for w in dict.fromkeys(df["options"].astype(str)) if w] if "options" in df else []
    if len(words) == 1:
        kw, extra = {"rare_classes": "refuse"}, []  # the words leave out what is at its default
        for key, value in parse_options(words[0]).items():
            if key in _OPTION_TYPES:
                kw[key] = _OPTION_TYPES[key](value)
            else:
                extra.append((key, value))
        try:
            return replace(base, **kw, estimator_kwargs=tuple(extra))
        except (TypeError, ValueError):
            return None
    return _search_digest(df, base, digest)


def _search_digest(df: pd.DataFrame, base: SweepSettings, digest: str) -> SweepSettings | None:
    """The settings near `base` whose digest is `digest`: every seeds (1-30) x folds (2-20) x PCA (the
    sizes the table's `pca` column shows first, then none, `base`'s and the default) x rare classes,
    then seed (0-20) and permutation counts changed on top of `base` alone. About 2 ms a candidate."""
    shown = pd.to_numeric(df["pca"], errors="coerce").dropna() if "pca" in df else pd.Series(dtype=float)
    pcas = list(dict.fromkeys([*(int(v) for v in sorted(shown.unique()) if v > 0), None, base.pca, DEFAULTS.pca]))
    rares = list(dict.fromkeys([base.rare_classes, "refuse", "merge"]))
    candidates = ({"pca": p, "seeds": a, "folds": b, "rare_classes": r}
                  for r in rares for p in pcas for a in range(1, 31) for b in range(2, 21))
    others = [{"seed": v} for v in range(21)]
    if "p_perm" in df and df["p_perm"].notna().any():
        others += [{"permutations": v} for v in (*range(1, 201), 499, 999)]
    for change in [{}, *candidates, *others]:
        cand = replace(base, **change)
        try:
            if cand.digest() == digest:
                return cand
        except Exception:  # noqa: BLE001 - a candidate the estimator refuses is not the table's
            continue
    return None


def _resume_hint(df: pd.DataFrame, settings: SweepSettings | None, table: SweepSettings | None,
                 differences: list[str]) -> str:
    """How to resume the table (its settings, as options: `table`, from `table_settings`) or start
    afresh; `differences`: `settings_differences` of the table and `settings`."""
    fresh = f"or start afresh with --overwrite (its {len(df)} {'row is' if len(df) == 1 else 'rows are'} replaced) or a new --out"
    if table is None:
        return ("to resume it pass the settings it was made with (the table does not record seeds, folds, "
                "pca and seed, and none near these gives its digest: another matprobe version may have "
                "written it), " + fresh)
    theirs, mine = _all_options(table), _all_options(settings)

    def said(k, v):  # seed and the estimator's parameters have no option of `matprobe sweep`: the API's
        return f"{_FLAGS[k]} {v}" if k in _FLAGS else f"{k}={v} (matprobe.sweep's)"

    flags = [said(k, v) for k, v in theirs.items() if mine.get(k) != v]
    # the chain and the unit are settings of the table too, though not among its options' words
    if settings is not None and tuple(table.factors) != tuple(settings.factors):
        flags.insert(0, f"--factors {','.join(table.factors)}")
    if settings is not None and table.unit != settings.unit:
        flags.insert(0, f"--unit {table.unit}")
    shown = parse_options(table.options())  # what is not at its default
    whole = " ".join(said(k, v) for k, v in shown.items() if k != "seed" or v != "0")
    if not flags and table.digest() != settings.digest() and not differences:
        return ("its seeds, folds, pca and seed are these, so the estimator's fitting differs (the digest "
                "holds it: another matprobe version wrote the table); " + fresh.replace("or start", "start"))
    return f"to resume it pass {' '.join(flags) or 'the table’s settings'} (the table's: {whole}), " + fresh


def done_keys(df: pd.DataFrame, n_terms: int, digest: str, path, settings: SweepSettings | None = None) -> set:
    """Cells whose every term is in the table; refuses a table made with other settings, naming
    what differs with both values (`settings_differences`) and how to resume or start afresh."""
    if df.empty:
        return set()
    other = sorted(set(df["settings"].astype(str)) - {digest})
    if other:
        # the table's own settings, searched once for both the differences and the hint
        table = table_settings(df, settings) if settings is not None else None
        said = settings_differences(df, settings, table)
        what = ("; ".join(said) if said else "seeds, folds, pca, seed, rare classes or the estimator's fitting "
                "differ (the table records them in its settings digest only)")
        raise EstimationError(f"{path} was written with other settings ({what}; settings {other[0]} vs {digest}); "
                              + _resume_hint(df, settings, table, said))
    df = df[~_failed(df)]  # failed cells are retried
    counts = df.groupby(CELL_KEY).size()
    return {k for k, v in counts.items() if v >= n_terms}


def _stale_grouping(table: pd.DataFrame, finished: set, settings: SweepSettings) -> set:
    """The finished cells whose terms were grouped otherwise than `mi` groups now
    (`chain.stale_grouping`): recomputed, their rows replaced."""
    from matprobe.mi.chain import image_facts, stale_grouping

    if table.empty or not finished or not estimator_tags(settings.estimator).uses_fold_plan:
        return set()
    notes = table.groupby(CELL_KEY)["note"].apply(list).to_dict()
    facts = {store: image_facts(store, settings.factors) for store in {key[0] for key in finished}}  # once a store
    return {key for key in finished if stale_grouping(facts[key[0]], settings.estimator, notes.get(key, []))}


def _check_table_dataset(table: pd.DataFrame, cells: list[Cell], factors, out) -> None:
    """The stores added to a table are of its dataset: checked against a store the table holds
    that this call does not give (`build_grid` checks the ones given together). Stores added one
    call at a time to one --out put three datasets in one table, under one checkpoint's name."""
    from matprobe.store import EmbeddingStore

    if table.empty or not cells:
        return
    given = {c.store for c in cells}
    earlier = [s for s in dict.fromkeys(table["store"].astype(str)) if s not in given and Path(s).is_file()]
    if not earlier:
        return
    with EmbeddingStore.open(cells[0].store) as st:
        _refuse_other_dataset(earlier[0], cells[0].store, st, factors, where=f" (a store of {out})")


# ---------------------------------------------------------------------- driver

@dataclass
class SweepResult:
    table: pd.DataFrame
    out: Path
    n_cells: int
    n_computed: int
    n_resumed: int
    seconds: float
    rank: int = 0
    world_size: int = 1

    def failures(self) -> pd.DataFrame:
        """One row per cell whose estimation failed (checkpoint, layer, pool, note): written with
        NaN estimates and retried on a rerun."""
        frame = self.table
        if frame.empty or "flags" not in frame:
            return frame.iloc[:0]
        return frame[_failed(frame)].drop_duplicates(["store", "layer", "pool"])[
            ["checkpoint", "layer", "pool", "note"]]


def shard_table_path(out: Path, rank: int, world: int) -> Path:
    return out.parent / f"{out.name}.shards" / f"rank{rank}-of-{world}{out.suffix}"


@locked_output("out")  # a second sweep on the same table is refused: "in use by process N"
def run_sweep(stores, out, *, factors=DEFAULTS.factors, layers=None, pools=None, estimator: str = DEFAULTS.estimator,
              seeds: int = DEFAULTS.seeds, folds: int = DEFAULTS.folds, pca: int | None = DEFAULTS.pca,
              seed: int = DEFAULTS.seed, ci_level: float = DEFAULTS.level,
              unit: str = NATS, jobs: int = 1, pointwise: bool = True, overwrite: bool = False,
              progress: bool = False, on_cell: Callable[[Cell, list], None] | None = None,
              estimator_kwargs: dict | None = None, device: str = "cpu", controls: bool = False,
              codelength: bool = False, permutations: int = 0, rare_classes: str = "refuse") -> SweepResult:
    """Run (or resume) the sweep; returns the full table of `out` (all ranks merged on rank 0)."""
    t0 = time.perf_counter()
    out = check_out(out)
    unit = check_unit(unit)
    if not stores:
        raise EstimationError("no stores given; pass one or more .h5 stores")
    factors = tuple(check_factors(factors))  # distinct columns (M and modality are one)
    check_level(ci_level, "ci_level")
    pca = check_pca(pca, error=EstimationError)  # 0 means no reduction (it used to keep 0 components)
    if seeds < 1 or folds < 2 or jobs < 1:
        raise EstimationError("--seeds and --jobs must be >= 1 and --folds >= 2")
    kw = dict(estimator_kwargs or {})
    if device != "cpu":
        kw["device"] = device
    settings = SweepSettings(factors=factors, estimator=estimator, seeds=seeds, folds=folds, pca=pca,
                             seed=seed, ci_level=ci_level, unit=unit, pointwise=pointwise,
                             estimator_kwargs=tuple(sorted(kw.items())), controls=bool(controls),
                             codelength=bool(codelength), permutations=int(permutations),
                             rare_classes=check_rare_classes(rare_classes))
    if "," in str(estimator):  # `mi --estimator probe,ksg` takes a list; a sweep table is one estimator's
        raise EstimationError(f"--estimator {estimator}: a sweep takes one estimator (`mi` takes a list); run one "
                              "sweep per estimator, each with its own --out")
    make_estimator(estimator, seeds=seeds, folds=folds, pca=pca)  # unknown names fail here
    # a store named twice (`a.h5 ./a.h5`) is one store: its cells were estimated and counted once per name
    stores = list({os.path.realpath(str(s)): str(s) for s in reversed(list(stores))}.values())[::-1]
    cells = build_grid(stores, layers, pools, factors)
    ranks = init_ranks(device)
    target = out if not ranks.distributed else shard_table_path(out, ranks.rank, ranks.world_size)
    if overwrite and ranks.is_main and out.exists():
        out.unlink()
    if overwrite and target.exists():
        target.unlink()
    ranks.barrier()
    n_terms = len(factors)
    digest = settings.digest()
    table = read_table(target)
    finished = done_keys(table, n_terms, digest, target, settings)
    content_ids = store_content_ids(c.store for c in cells)
    check_finished_cells(table, content_ids, target)
    _check_table_dataset(table, cells, factors, target)
    if ranks.distributed and out.exists():
        finished |= done_keys(read_table(out), n_terms, digest, out, settings)  # merged earlier runs
    finished -= _stale_grouping(table, finished, settings)
    mine = ranks.split(cells) if ranks.distributed else cells
    todo = [c for c in mine if c.key not in finished]
    pw_dir = str(out.parent / f"{out.name}.pointwise") if pointwise else None
    n_resumed = len(mine) - len(todo)

    def add(cell, rows):
        nonlocal table
        for r in rows:  # failed rows: the content the cell was tried on
            r["fingerprint"] = r["fingerprint"] or content_ids.get(cell.store, "")
        new = pd.DataFrame(rows, columns=_columns(rows))
        if not table.empty:  # a cell retried after a failure replaces its failed rows
            same = (table["store"] == cell.store) & (table["layer"] == cell.layer) & (table["pool"] == cell.pool)
            table = table[~same].reset_index(drop=True)
        table = new if table.empty else pd.concat([table, new], ignore_index=True)
        write_table(_sort(table, cells, factors), target)
        if on_cell is not None:
            on_cell(cell, rows)

    from matprobe.progress import track

    bar = track("sweep", len(mine), n_resumed, enabled=progress and ranks.is_main, unit="cells")
    bar.start()
    try:
        if jobs == 1 or len(todo) <= 1:
            from matprobe.interrupts import DeferredInterrupts

            # a signal is acted on between cells: raised where it lands, inside a finaliser (torch
            # and h5py run them) it was dropped and the sweep ran to its end with exit 0 (seen under
            # a loaded test suite); a second Ctrl-C or SIGTERM stops at once
            with DeferredInterrupts() as interrupts:
                for cell in todo:
                    interrupts.check()
                    bar.update(description=_describe(cell))
                    add(cell, safe_estimate_cell(cell, settings, pw_dir))
                    bar.advance()
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn, not fork: torch's thread pools do not survive a fork safely
            from matprobe.interrupts import ignore_in_worker, stop_pool

            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                       initializer=_init_worker if os.environ.get(MARKER) == "1" else ignore_in_worker)
            try:
                reg = registration(estimator)  # plug-ins registered here reach the workers
                futures = {pool.submit(safe_estimate_cell, cell, settings, pw_dir, 1, reg): cell for cell in todo}
                for fut in as_completed(futures):
                    cell = futures[fut]
                    try:
                        rows = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a worker that died (memory): that cell only
                        rows = failed_rows(cell, settings, exc)
                    add(cell, rows)
                    bar.update(description=_describe(cell))
                    bar.advance()
            except KeyboardInterrupt:  # Ctrl-C / SIGTERM: finished cells are in the table already
                stop_pool(pool)
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.stop()
    table = _sort(table, cells, factors)
    if not ranks.distributed:
        write_table(table, out)
    else:
        ranks.barrier()  # every shard file is complete
        if ranks.is_main:
            parts = [read_table(shard_table_path(out, r, ranks.world_size)) for r in range(ranks.world_size)]
            if out.exists():
                parts.append(read_table(out))
            merged = pd.concat([p for p in parts if len(p)], ignore_index=True)
            merged = merged.drop_duplicates(subset=CELL_KEY + ["term"], keep="first")
            table = _sort(merged, cells, factors)
            write_table(table, out)
        ranks.barrier()
        if not ranks.is_main:
            table = read_table(out)
    return SweepResult(table=table, out=out, n_cells=len(cells), n_computed=len(todo),
                       n_resumed=n_resumed, seconds=time.perf_counter() - t0, rank=ranks.rank,
                       world_size=ranks.world_size)


def _init_worker() -> None:
    """Worker initializer of a sweep under portable numerics (`--portable-numerics`): each worker
    inherits the environment and checks every setting before it computes, as the pipeline's do."""
    from matprobe.interrupts import ignore_in_worker
    from matprobe.numerics import ensure_portable_here

    ignore_in_worker()
    ensure_portable_here()


def _describe(cell: Cell) -> str:
    return f"{cell.checkpoint} layer {cell.layer} {cell.pool}"


def pointwise_dir(out) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.pointwise"

