"""The notebook API: one function per CLI verb, with the CLI's defaults and a typed result.

    import matprobe as mp
    report = mp.validate("manifest.jsonl")                          # ValidationReport
    store = mp.extract(data="manifest.jsonl", ckpt="ckpt/", out="s.h5")   # ExtractResult
    res = mp.mi("s.h5", factors="M,A,T,Y")                         # ChainResult
    chk = mp.check("s.h5", mi=res)      # CheckResult; reuses I(Z;Y|M,A,T) from `res`
    sig = mp.significance("results.csv")                          # SignificanceResult
    mp.bounds.fano(error=0.168, classes=4)                         # FanoBounds

Each function calls the library function its CLI command calls (`matprobe <verb>`), so the
same inputs give the same numbers and files; parameter names and defaults are the CLI's
(`tests/test_api.py` compares them). Display-only options (`--format`, `--bits`) have no
counterpart: results carry `.frame()` and `.to_table()`. Functions that write a file only
write it when `out` is given, except where writing is the verb's purpose (`extract`,
`sweep`, `split`, `report`, `run`). `progress=True` shows a bar on a terminal or in a
notebook (`matprobe.progress`).

`matprobe/__init__.py` imports these lazily, so `import matprobe` stays fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

from matprobe.checks import check_level
from matprobe.defaults import DEFAULTS

if TYPE_CHECKING:  # the result types, for signatures and help() only
    import pandas as pd

    from matprobe.data.loaders import ValidationReport
    from matprobe.data.model import MATDataset
    from matprobe.extract.runner import ExtractResult
    from matprobe.mi.chain import ChainResult
    from matprobe.mi.compare import Comparison
    from matprobe.mi.sweep import SweepResult
    from matprobe.stats.significance import SignificanceResult
    from matprobe.stats.summary import SummaryResult
    from matprobe.store import EmbeddingStore
    from matprobe.theory.check import CheckResult
    from matprobe.theory.relate import Relation

PathLike = Union[str, Path]

__all__ = ["ReportFiles", "RunResult", "check", "compare", "default_feature", "demo", "extract", "init", "mi",
           "open_store", "relate", "report", "run", "significance", "significance_summary", "split",
           "store_info", "sweep", "validate"]


def _python_words(fn):
    """A function of this module whose error names a command-line flag that is one of its parameters says
    the parameter too ("--level 95" -> "--level (level=) 95"): a Python user found messages that named
    only flags the function has no such spelling for (the error's type and other arguments kept)."""
    import copy
    import functools
    import inspect

    from matprobe.errors import MatprobeError

    params = set(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MatprobeError as exc:
            if not exc.args or not isinstance(exc.args[0], str) or (
                    text := _flags_as_parameters(exc.args[0], params)) == exc.args[0]:
                raise
            err = copy.copy(exc)
            err.args = (text, *exc.args[1:])
            raise err from None

    return wrapper


def _flags_as_parameters(text: str, params) -> str:
    """`text` with each "--flag" that names one of `params` followed by "(flag=)"."""
    import re

    def said(match) -> str:
        name = match.group(1).replace("-", "_")
        return f"{match.group(0)} ({name}=)" if name in params else match.group(0)

    return re.sub(r"(?<![\w-])--([a-z][a-z0-9-]*)(?!\s*\()", said, text)


def _names(value) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _opt_str(path) -> str | None:
    return None if path is None else str(path)


def _maybe_portable(portable: bool, fn, *args, **kwargs):
    """fn(*args, **kwargs), under portable numerics when asked (`numerics.call_portable`)."""
    if not portable:
        return fn(*args, **kwargs)
    from matprobe.numerics import call_portable

    return call_portable(fn, *args, **kwargs)


def default_feature(store_path, layer=None, pool=None) -> tuple[str, str]:
    """(layer, pool) to use, resolved as every command resolves them
    (`EmbeddingStore.resolve_feature`: the last decoder block and pool "last" by default,
    negative layers from the end).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from matprobe.api import default_feature
    >>> from matprobe.store import EmbeddingStore
    >>> path = tempfile.mkdtemp() + "/s.h5"
    >>> z = np.zeros((4, 2), dtype="float32")
    >>> EmbeddingStore.from_arrays(path, ["a", "b", "c", "d"], {"modality": ["CT", "CT", "MRI", "MRI"]},
    ...                            {("0", "last"): z, ("3", "last"): z, ("3", "image"): z}).close()
    >>> default_feature(path)
    ('3', 'last')
    >>> default_feature(path, layer="-2")  # the second-last stored layer
    ('0', 'last')
    """
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(store_path) as st:
        return st.resolve_feature(layer, pool)


# ------------------------------------------------------------------------------ data


@_python_words
def validate(file: PathLike, image_root: Optional[PathLike] = None, images: bool = True,
             columns: Optional[Union[str, dict]] = None, task_level: str = "subset") -> ValidationReport:
    """Count samples per (M, A, T) triplet and list every problem found (`matprobe data validate`).

    Parameters
    ----------
    file : str or Path
        Med-MAT JSON/JSONL or a MAT manifest (JSONL/CSV/TSV/Parquet, or a Hugging Face
        ``save_to_disk`` folder).
    image_root : str or Path, optional
        Folder that replaces the ``med-mat/`` prefix (Med-MAT) or anchors relative image paths.
    images : bool, default True
        Open every image to check that it is readable.
    columns : str or dict, optional
        Map your column names to the expected ones, e.g. ``"img_file=image,organ=anatomy"``
        (common aliases such as ``choices`` and ``image_path`` are read without it).
    task_level : {"subset", "group"}, default "subset"
        Med-MAT files only: Table 9's task per subset, or the paper's coarse tasks (Tables 3-7).

    Returns
    -------
    ValidationReport
        ``.triplet_counts`` (DataFrame: modality, anatomy, task, n), ``.problems`` (list of
        str; empty when the file is usable), ``.notes``, ``.format``, ``.n_records``.

    Examples
    --------
    A four-item MAT manifest (one JSON object per line; images are not opened here):

    >>> import json, tempfile, matprobe as mp
    >>> path = tempfile.mkdtemp() + "/manifest.jsonl"
    >>> triplets = [("CT", "Chest", "Plane"), ("CT", "Chest", "Plane"), ("MRI", "Brain", "Plane"),
    ...             ("MRI", "Knee", "Plane")]
    >>> with open(path, "w") as fh:
    ...     for i, (m, a, t) in enumerate(triplets):
    ...         print(json.dumps({"id": f"q{i}", "question": "Which plane?", "options": ["axial", "coronal"],
    ...                           "answer": "A", "modality": m, "anatomy": a, "task": t}), file=fh)
    >>> report = mp.validate(path, images=False)
    >>> report.problems, report.n_records
    ([], 4)
    >>> report.triplet_counts.n.tolist()  # one count per (modality, anatomy, task)
    [2, 1, 1]
    >>> from matprobe.errors import MatprobeError
    >>> try:  # a bad input is one error line that names it
    ...     mp.validate(path.replace("manifest", "absent"), images=False)
    ... except MatprobeError as err:
    ...     print(str(err).endswith("absent.jsonl: no such file"))
    True
    """
    from matprobe.data import validate_dataset
    from matprobe.data.medmat import task_level_for

    with task_level_for(file, task_level):
        report = validate_dataset(file, image_root=image_root, check_images=images, columns=columns)
    # its problems and notes name the parameters beside the flags, as the errors of this module do
    params = ("image_root", "images", "columns")
    report.problems = [_flags_as_parameters(p, params) for p in report.problems]
    report.notes = [_flags_as_parameters(n, params) for n in report.notes]
    return report


@_python_words
def split(file: PathLike, target: str, config: str = "related", out: Optional[PathLike] = None,
          image_root: Optional[PathLike] = None, columns: Optional[Union[str, dict]] = None,
          task_level: str = "subset") -> MATDataset:
    """The training split for a held-out target triplet by MAT overlap (`matprobe data split`).

    Parameters
    ----------
    file : str or Path
        Dataset file (Med-MAT or a MAT manifest).
    target : str
        Held-out triplet ``"Modality,Anatomy,Task"``, e.g. ``"CT,Lung,Classification"``.
    config : {"related", "unrelated", "zero-overlap", "any-overlap", "leave-one-out", "without-modality", "without-anatomy", "without-task"}, default "related"
        Which triplets train (CrossMed §III, §V). Med-MAT's Unrelated (Baseline+) is "zero-overlap", its
        All Related (Fig. 4) "any-overlap" (one or two of M, A, T shared).
    out : str or Path, optional
        Write the split as a JSONL manifest (``split`` = train/test) here.
    image_root : str or Path, optional
        Remap image paths (see `validate`).
    columns : str or dict, optional
        Map your column names to the expected ones, e.g. ``"img_file=image,organ=anatomy"``
        (common aliases such as ``choices`` and ``image_path`` are read without it).
    task_level : {"subset", "group"}, default "subset"
        Med-MAT files only: Table 9's task per subset, or the paper's coarse tasks (Tables 3-7).

    Returns
    -------
    MATDataset
        The samples with their ``split``; ``.frame()`` gives a DataFrame.

    Examples
    --------
    Held out: (MRI, Knee, Plane). Related training triplets share two of its three components,
    Unrelated ones at most one (`validate`'s four items, written here from a DataFrame):

    >>> import tempfile, pandas as pd, matprobe as mp
    >>> path = tempfile.mkdtemp() + "/manifest.jsonl"
    >>> items = pd.DataFrame({"id": ["q0", "q1", "q2", "q3"], "modality": ["CT", "CT", "MRI", "MRI"],
    ...                       "anatomy": ["Chest", "Chest", "Brain", "Knee"], "task": "Plane",
    ...                       "question": "Which plane?", "options": [["axial", "coronal"]] * 4, "answer": "A"})
    >>> items.to_json(path, orient="records", lines=True)
    >>> related = mp.split(path, target="MRI,Knee,Plane", config="related").frame()
    >>> related[["id", "anatomy", "split"]].values.tolist()
    [['q2', 'Brain', 'train'], ['q3', 'Knee', 'test']]
    >>> unrelated = mp.split(path, target="MRI,Knee,Plane", config="unrelated").frame()
    >>> unrelated[["id", "anatomy", "split"]].values.tolist()
    [['q0', 'Chest', 'train'], ['q1', 'Chest', 'train'], ['q3', 'Knee', 'test']]
    """
    from matprobe.data.medmat import task_level_for
    from matprobe.data.splits import split_file

    with task_level_for(file, task_level):
        return split_file(file, target, config, out=out, image_root=image_root, columns=columns)


# ------------------------------------------------------------------------------ extraction


@_python_words
def extract(*, ckpt: Optional[PathLike] = None, data: PathLike, out: PathLike,
            adapter: Optional[PathLike] = None, base: Optional[PathLike] = None, layers: str = "8,16,-1",
            pool: str = "last,image,question,mean", batch_size: int = 8, dtype: str = "fp32",
            device: str = "cpu", max_pixels: Optional[int] = None, answers: Optional[bool] = None,
            overwrite: bool = False, image_root: Optional[PathLike] = None, merge_adapter: bool = True,
            attn: str = "sdpa", rendering: str = "multi-image", vision_tower: Optional[PathLike] = None,
            template: Optional[str] = None, columns: Optional[Union[str, dict]] = None,
            progress: bool = True) -> ExtractResult:
    """Pooled hidden states (and the model's answers) of a VLM into an HDF5 store (`matprobe extract`).

    An existing store is resumed (rows already done are kept) unless ``overwrite``.

    Parameters
    ----------
    ckpt : str or Path, optional
        Local Hugging Face checkpoint folder, or a LoRA adapter folder (then its base is read
        from the adapter, or given by ``base``).
    data : str or Path
        Med-MAT JSON/JSONL or MAT manifest.
    out : str or Path
        HDF5 store to write.
    adapter, base : str or Path, optional
        A peft LoRA adapter applied to ``ckpt``; the adapter's base checkpoint.
    layers : str, default "8,16,-1"
        Decoder block outputs from 0; negatives count from the end; ``final``; ``embed``.
    pool : str, default "last,image,question,mean"
        Pools to store (``option_images`` for multi-image prompts).
    batch_size, dtype, device, max_pixels, answers, image_root, merge_adapter, attn, rendering
        As the CLI options of the same names (``matprobe extract --help``).
    vision_tower : str or Path, optional
        Original-format LLaVA: a local copy of the CLIP tower its config names.
    columns : str or dict, optional
        Map the manifest's column names (see `validate`).
    template : str, optional
        Prompt template: ``chat``, ``llava_v1``, ``vicuna_v1``, ``mistral_instruct``, ``plain`` or a
        file; default: the checkpoint's own (``llava_v1`` for original-format LLaVA-1.5).
    overwrite : bool, default False
        Start again instead of resuming.
    progress : bool, default True
        Show a progress bar (terminal or notebook).

    Returns
    -------
    ExtractResult
        ``.out``, ``.n_total``, ``.n_computed``, ``.n_resumed``, ``.layers``, ``.pools``,
        ``.accuracy``, ``.samples_per_s``.

    Examples
    --------
    A tiny random-initialised LLaVA (4 decoder blocks of width 64, saved and loaded by
    ``from_pretrained`` as a 7B checkpoint is) on eight generated images of two triplets:

    >>> import tempfile, numpy as np, matprobe as mp
    >>> from matprobe.data.demo import DemoSpec, build_demo_dataset
    >>> from matprobe.extract.tiny import build_tiny_checkpoint
    >>> folder = tempfile.mkdtemp()
    >>> _ = build_demo_dataset(f"{folder}/data", DemoSpec(n_per_triplet=4, triplets=[
    ...     ("CT", "Chest", "Exposure"), ("MRI", "Brain", "Exposure")]))
    >>> ckpt = build_tiny_checkpoint(f"{folder}/ckpt", "llava", seed=0)
    >>> res = mp.extract(ckpt=ckpt, data=f"{folder}/data/manifest.jsonl", out=f"{folder}/s.h5",
    ...                  layers="0,-1", pool="last,image", progress=False)
    >>> res.n_computed, res.layers, res.pools  # -1 is the last of the 4 blocks
    (8, ['0', '3'], ['last', 'image'])
    >>> with mp.open_store(res.out) as st:
    ...     shape, correct = st.read("3", "last").shape, st.answers()["correct"]
    >>> shape, bool(res.accuracy == correct.mean())
    ((8, 64), True)
    >>> again = mp.extract(ckpt=ckpt, data=f"{folder}/data/manifest.jsonl", out=f"{folder}/s.h5",
    ...                    layers="0,-1", pool="last,image", progress=False)  # the store exists: resumed
    >>> again.n_computed, again.n_resumed
    (0, 8)
    """
    from matprobe.extract.runner import ExtractConfig
    from matprobe.extract.runner import extract as run_extract

    return run_extract(
        ExtractConfig(ckpt=_opt_str(ckpt), data=str(data), out=str(out), layers=layers, pools=pool,
                      batch_size=batch_size, dtype=dtype, device=device, adapter=_opt_str(adapter),
                      base=_opt_str(base), max_pixels=max_pixels, answers=answers, overwrite=overwrite,
                      image_root=_opt_str(image_root), merge_adapter=merge_adapter,
                      attn_implementation=attn, rendering=rendering,
                      vision_tower=_opt_str(vision_tower), template=template, columns=columns),
        progress=progress)


# ------------------------------------------------------------------------------ MI


@_python_words
def mi(store, factors: str = ",".join(DEFAULTS.factors), layer: Optional[str] = None,
       pool: Optional[str] = None, *, estimator: str = DEFAULTS.estimator, seeds: int = DEFAULTS.seeds,
       folds: int = DEFAULTS.folds, pca: Optional[int] = DEFAULTS.pca, level: float = DEFAULTS.level,
       unit: str = DEFAULTS.unit, out: Optional[PathLike] = None, device: str = "cpu",
       pointwise: bool | PathLike | None = None, permutations: int = 0, controls: bool = False,
       codelength: bool = False, progress: bool = True, rare_classes: str = "refuse",
       portable_numerics: bool = False, groups=None, **kwargs) -> ChainResult:
    """The MI chain I(Z;M) + I(Z;A|M) + I(Z;T|M,A) and the direct I(Z;M,A,T) (`matprobe mi`).

    Parameters
    ----------
    store : str, Path or ndarray
        An HDF5 embedding store; or an array Z of shape (n, d), with ``factors`` a dict
        ``{name: labels}``.
    factors : str, list of str or dict, default "M,A,T"
        Chain order: label columns (M, A, T, Y = label, or any column). Add ``Y`` (or
        ``answer_index``) at the end to get I(Z;Y|M,A,T) per stratum here, which `check`
        then reuses instead of estimating it again.
    layer : str, optional
        Layer key as stored, or a negative index from the end; default: the last decoder block
        stored (``store.resolve_feature``, as every command).
    pool : str, optional
        Pooling key as stored; default "last" where stored.
    estimator : str, default "probe"
        Comma list of registered estimators (probe, mine, nwj, infonce, smile, ksg, ...).
    seeds, folds, pca : int
        Seeds per estimate, cross-fitting folds, PCA dimensions (label-free: fitted once on every row,
        shared by every term and fold; 0 or None = none).
    level : float, default 0.95
        Interval level.
    unit : {"nats", "bits"}, default "nats"
    out : str or Path, optional
        Write FILE.json (the results document `check` reads) or FILE.csv (the table).
    device : str, default "cpu"
        Torch device for neural critics.
    pointwise : bool, str or Path, optional
        True keeps each term's per-item pointwise information (``res.pointwise_frame()``); a path
        also writes that table to FILE.csv (``matprobe mi --pointwise FILE.csv``).
    permutations : int, default 0
        B > 0: each chain term's permutation null (the target permuted within the conditioning
        strata B times, same folds and preprocessing): ``p_perm``, ``null_mean`` and ``excess``
        columns in ``.frame()``, ``"permutation"`` in the results document. Costs B times the terms.
    controls : bool, default False
        Each chain term's control task (labels drawn from the target's frequencies per stratum,
        fixed per image) and the selectivity, estimate minus control, with its paired interval
        (``selectivity``, ``selectivity_low``, ``selectivity_high``, ``control`` in ``.frame()``).
    codelength : bool, default False
        Each chain term's online codelength in bits (``online_bits``, ``uniform_bits``,
        ``compression`` in ``.frame()``; ``"codelength"`` in the results document).
    progress : bool, default True
        Show a progress bar per term (terminal or notebook).
    rare_classes : {"refuse", "merge"}, default "refuse"
        A factor's classes with fewer than 2 rows per fold: refused (named), or merged into one
        class per factor, the terms involved flagged ``merged-rare-classes`` (``.merged_classes``
        lists the merges; a merged target's term is at most the factor's own).
    groups : array or str, optional
        A group per row (an image with several questions, a patient, an item seen several
        times), or a store's sample column naming it: each group's rows stay in one fold, on one
        side of the splits inside a fold, and the bootstrap draws groups. Default: a store's image
        column (each image one item); where nothing says what an item is (arrays, a store without
        images), identical rows of Z are grouped unasked.
        Copies of an item on both sides of a fold are read as information (an outside study: a
        null at log 2, its lower end at 0.5 nats).
    portable_numerics : bool, default False
        Compute in a fresh process with the kernels every x86-64 CPU has, one thread
        (`matprobe.numerics.call_portable`), as a pipeline with ``[run] portable_numerics = true``
        does: its MI files are then reproduced to the bit.
    **kwargs
        Passed to `matprobe.mi.chain_terms` (e.g. ``seed``, ``min_stratum``).

    Returns
    -------
    ChainResult
        ``.frame()`` (term, estimator, estimate, ci_low, ci_high, ...), ``.to_table()``,
        ``.meta`` (store, fingerprint, layer, pool).

    Examples
    --------
    >>> import numpy as np, matprobe as mp
    >>> rng = np.random.default_rng(0)
    >>> m = rng.integers(0, 2, 400)
    >>> z = m[:, None] + 0.1 * rng.standard_normal((400, 2))
    >>> res = mp.mi(z, factors={"M": m}, seeds=1, folds=2, pca=None, progress=False)
    >>> round(float(res.frame().query("term == 'I(Z;M)'").estimate.iloc[0]), 1)  # log 2 nats
    0.7
    """
    from matprobe.mi.chain import chain_terms, check_out_path, run_store, write_results

    if out is not None:
        check_out_path(out)
    ests = _names(estimator)
    check_level(level)  # named as this function and the command line name it, not as chain_terms does
    kw = dict(estimators=ests, seeds=seeds, folds=folds, pca=pca or None, ci_level=level, unit=unit,
              progress=progress, permutations=permutations, controls=controls, codelength=codelength,
              pointwise=bool(pointwise), rare_classes=rare_classes,
              **({} if groups is None else {"groups": groups}), **kwargs)
    if device != "cpu":
        kw["device"] = device
    if isinstance(factors, dict):
        if out is not None:
            raise ValueError("out= needs a store (the results document names it); use res.frame().to_csv()")
        return _maybe_portable(portable_numerics, chain_terms, store, factors, **kw)
    if not isinstance(store, (str, os.PathLike)):
        raise ValueError(f"Z is given as {type(store).__name__}, not a store path: give factors as a dict of labels "
                         "per row, e.g. factors={'M': modality, 'A': anatomy} (a string of names picks a store's "
                         "columns)")
    layer, pool = default_feature(store, layer, pool)
    result, meta = _maybe_portable(portable_numerics, run_store, store, _names(factors), layer, pool, **kw)
    if out is not None:
        write_results(result, out, store=meta["store"], fingerprint=meta["fingerprint"],
                      layer=meta["layer"], pool=meta["pool"], numerics=meta.get("numerics"))
    if pointwise not in (None, True, False):
        result.write_pointwise_csv(pointwise)
    return result


@_python_words
def sweep(stores: Sequence[PathLike], out: PathLike, factors: str = "M,A,T", layers: str = "all",
          pools: str = "all", *, estimator: str = "probe", seeds: int = DEFAULTS.seeds,
          folds: int = DEFAULTS.folds, pca: Optional[int] = DEFAULTS.pca, jobs: int = 1,
          level: float = DEFAULTS.level, unit: str = DEFAULTS.unit, pointwise: bool = True,
          overwrite: bool = False, device: str = "cpu", controls: bool = False, codelength: bool = False,
          permutations: int = 0, progress: bool = True, rare_classes: str = "refuse",
          portable_numerics: bool = False) -> SweepResult:
    """MI chain terms for every (checkpoint, layer, pool) cell in one resumable table (`matprobe sweep`).

    Parameters
    ----------
    stores : list of str or Path
        One HDF5 store per checkpoint (a single path is accepted too).
    out : str or Path
        Results table: FILE.csv, FILE.json or FILE.parquet (resumed if it exists).
    factors : str, default "M,A,T"
        Chain order.
    layers, pools : str, default "all"
        ``"all"`` or stored keys, e.g. ``"8,16,-1"`` (negative: from the last block), ``"last,image"``.
    estimator, seeds, folds, pca, level, unit, device
        As in `mi`.
    jobs : int, default 1
        Cells computed in parallel processes.
    pointwise : bool, default True
        Keep per-sample terms in ``OUT.pointwise/``.
    overwrite : bool, default False
        Start again instead of resuming.
    controls, codelength, permutations
        Baselines per term, as in `mi`: selectivity, codelength and permutation-null columns.
    progress : bool, default True
        A progress bar per cell.
    rare_classes : {"refuse", "merge"}, default "refuse"
        As in `mi`: a cell whose factor has classes too small for the folds fails (flag ``failed``,
        ``.failures()`` says why), or they are merged and the terms flagged.
    portable_numerics : bool, default False
        As in `mi`: the sweep (its worker processes too) computes with the portable kernels.

    Returns
    -------
    SweepResult
        ``.table`` (tidy DataFrame: checkpoint, layer, pool, term, estimate, ci_low, ...),
        ``.out``, ``.n_cells``, ``.n_computed``, ``.n_resumed``, ``.failures()``.

    Examples
    --------
    One store with two layers: layer 0 is noise, layer 1 separates the modalities (class means
    4 s.d. apart on each of 2 axes, so I(Z;M) is within 0.02 nats of H(M) = log 2 = 0.69):

    >>> import tempfile, numpy as np, matprobe as mp
    >>> folder, rng, n = tempfile.mkdtemp(), np.random.default_rng(0), 400
    >>> m = rng.integers(0, 2, n)
    >>> features = {("0", "last"): rng.standard_normal((n, 2)).astype("float32"),
    ...             ("1", "last"): (4 * m[:, None] + rng.standard_normal((n, 2))).astype("float32")}
    >>> mp.EmbeddingStore.from_arrays(f"{folder}/ckpt.h5", [f"s{i}" for i in range(n)],
    ...                               {"modality": np.array(["CT", "MRI"])[m]}, features).close()
    >>> res = mp.sweep([f"{folder}/ckpt.h5"], f"{folder}/sweep.csv", factors="M", seeds=1, folds=2, pca=0,
    ...                progress=False)
    >>> noise, signal = res.table.sort_values("layer").itertuples()
    >>> bool(noise.ci_low <= 0 <= noise.ci_high), round(signal.estimate, 1), signal.unit
    (True, 0.7, 'nats')
    >>> again = mp.sweep([f"{folder}/ckpt.h5"], f"{folder}/sweep.csv", factors="M", seeds=1, folds=2, pca=0,
    ...                  progress=False)  # the table exists: its cells are resumed, not recomputed
    >>> again.n_cells, again.n_computed, again.n_resumed
    (2, 0, 2)
    """
    from matprobe.mi.sweep import run_sweep

    if isinstance(stores, (str, Path)):
        stores = [stores]
    check_level(level)
    return _maybe_portable(portable_numerics, run_sweep, list(stores), out, factors=_names(factors), layers=layers, pools=pools,
                     estimator=estimator, seeds=seeds, folds=folds, pca=pca or None, jobs=jobs, unit=unit,
                     pointwise=pointwise, overwrite=overwrite, ci_level=level, progress=progress,
                     device=device, controls=controls, codelength=codelength, permutations=permutations,
                     rare_classes=rare_classes)


@_python_words
def compare(store_a: PathLike, store_b: Optional[PathLike] = None, term: str = "T|M,A", *,
            layer: Optional[str] = None, pool: Optional[str] = None, layer_b: Optional[str] = None,
            pool_b: Optional[str] = None, factors=None, estimator: str = "probe", seeds: int = DEFAULTS.seeds,
            folds: int = DEFAULTS.folds, pca: Optional[int] = DEFAULTS.pca, level: float = DEFAULTS.level,
            n_boot: int = DEFAULTS.n_boot, unit: str = DEFAULTS.unit, out: Optional[PathLike] = None,
            progress: bool = True, rare_classes: str = "refuse", groups: Optional[str] = None) -> Comparison:
    """ΔI = I_A - I_B of one term on the shared samples, with a paired bootstrap (`matprobe compare`).

    Parameters
    ----------
    store_a, store_b : str or Path
        The two stores (omit ``store_b`` to compare two layers or pools of ``store_a``).
    term : str, default "T|M,A"
        ``target|conditioning set``, or a single factor such as ``"M"``.
    layer, pool, layer_b, pool_b : str, optional
        Features of A (default: deepest stored layer, pool ``last``) and of B (default: A's).
    factors : str or list, optional
        The chain the term is a term of, as `mi`'s ``factors`` (default: `mi`'s, M, A, T, where
        the term is one of its terms; else the conditioning set, then the target). Each side's
        estimate is then the one `mi` gives for that store.
    estimator, seeds, folds, pca, level, unit
        As in `mi`; the same folds and seeds on both sides.
    n_boot : int, default 2000
        Paired bootstrap resamples.
    out : str or Path, optional
        Write FILE.json.
    progress : bool, default True
    rare_classes : {"refuse", "merge"}, default "refuse"
        Classes with fewer than 2 rows per fold: refused, or merged into one per factor on both
        sides (said in ``.note``), as `mi` does.
    groups : str, optional
        A sample column of A whose rows are one item (an image with several questions, a patient):
        each group's rows stay in one fold on both sides and the paired bootstrap draws groups.
        Default, as `mi`: A's image column (each image one item); without one, rows identical in A or
        in B are grouped unasked.

    Returns
    -------
    Comparison
        ``.side_a``, ``.side_b`` (estimate and interval of each), ``.difference`` (``delta``,
        ``ci_low``, ``ci_high``, ``p_value``, ``n``); `matprobe.present.views.comparison_table` displays it.

    Examples
    --------
    Two stores of the same 300 items: A's embedding holds the label Y, B's does not.

    >>> import tempfile, numpy as np, matprobe as mp
    >>> folder, rng, n = tempfile.mkdtemp(), np.random.default_rng(0), 300
    >>> m, y = rng.integers(0, 2, n), rng.integers(0, 2, n)
    >>> noise = rng.standard_normal((n, 2))
    >>> labels = {"modality": np.array(["CT", "MRI"])[m], "label": np.array(["no", "yes"])[y]}
    >>> for name, signal in (("a", y), ("b", 0 * y)):
    ...     z = np.c_[m + 0.3 * noise[:, 0], signal + 0.5 * noise[:, 1]].astype("float32")
    ...     mp.EmbeddingStore.from_arrays(f"{folder}/{name}.h5", [f"s{i}" for i in range(n)], labels,
    ...                                   {("3", "last"): z}).close()
    >>> comp = mp.compare(f"{folder}/a.h5", f"{folder}/b.h5", term="Y|M", seeds=1, folds=2, pca=0,
    ...                   progress=False)
    >>> round(comp.difference.delta, 2), bool(comp.difference.ci_low > 0)  # I_A = 0.337 nats, I_B = 0
    (0.38, True)
    """
    from matprobe.mi.compare import compare_stores, write_comparison
    from matprobe.progress import track

    check_level(level)
    with track("compare", None, enabled=progress) as bar:
        bar.update(description=f"{term} on both stores")
        comp = compare_stores(store_a, store_b, term, layer=layer, pool=pool, layer_b=layer_b, pool_b=pool_b,
                              factors=factors, estimator=estimator, seeds=seeds, folds=folds, pca=pca or None,
                              ci_level=level, n_boot=n_boot, unit=unit, rare_classes=rare_classes, groups=groups)
        bar.advance()
    if out is not None:
        write_comparison(comp, out)
    return comp


@_python_words
def relate(stores: Sequence[PathLike], target: str = "label", *, layer: Optional[str] = None,
           pool: Optional[str] = None, estimator: str = "probe", seeds: int = DEFAULTS.seeds,
           folds: int = DEFAULTS.folds, pca: Optional[int] = DEFAULTS.pca, min_stratum: int = 30,
           level: float = DEFAULTS.level, unit: str = DEFAULTS.unit, out: Optional[PathLike] = None,
           progress: bool = True) -> Relation:
    """I(Z;Y|M,A,T) against the stored accuracy per stratum across checkpoints (`matprobe relate`).

    Parameters
    ----------
    stores : list of str or Path
        Stores with the model's answers, one per checkpoint (a single path is accepted too).
    target : str, default "label"
        Y: ``label``, ``answer`` or another label column.
    layer, pool : str, optional
        Features (default: deepest stored layer, pool ``last``).
    estimator, seeds, folds, pca, level, unit
        As in `mi` (folds: cross-fitting folds, default 5).
    min_stratum : int, default 30
        Strata with fewer answered rows are left out of the correlation.
    out : str or Path, optional
        Write FILE.json (everything) or FILE.csv (the points).
    progress : bool, default True

    Returns
    -------
    Relation
        ``.points`` (DataFrame per checkpoint and stratum), ``.spearman`` with ``.ci_low``,
        ``.ci_high``, ``.p_value`` (whole strata permuted: ``.p_method``, ``.n_strata``,
        ``.n_checkpoints``, ``.n_permutations``), ``.notes``.

    Examples
    --------
    Three checkpoints of one dataset whose features carry the answer more and more clearly, and
    whose stored answers follow; two anatomies give two strata per checkpoint. Spearman's rho
    over the six points is scipy's; its p is not (scipy's counts the six points as independent,
    but three of them share each stratum): it permutes whole strata, the same way at every
    checkpoint, so two strata allow two arrangements and p cannot go below 1/2:

    >>> import tempfile, numpy as np, matprobe as mp
    >>> from scipy import stats
    >>> folder, rng, n = tempfile.mkdtemp(), np.random.default_rng(0), 240
    >>> y = rng.integers(0, 2, n)
    >>> labels = {"modality": ["CT"] * n, "anatomy": np.where(np.arange(n) < n // 2, "Chest", "Brain"),
    ...           "task": ["Cls"] * n, "answer_index": y}
    >>> stores = []
    >>> for k, signal in enumerate([0.0, 1.0, 3.0]):
    ...     z = signal * y[:, None] + rng.standard_normal((n, 2))
    ...     pred = (z[:, 0] > signal / 2).astype(int) if signal else rng.integers(0, 2, n)
    ...     stores.append(f"{folder}/ckpt{k}.h5")
    ...     mp.EmbeddingStore.from_arrays(stores[-1], [f"s{i}" for i in range(n)], labels,
    ...                                   {("3", "last"): z.astype("float32")}, answers={"pred": pred}).close()
    >>> rel = mp.relate(stores, target="answer", seeds=1, pca=0, progress=False)
    >>> rel.n_points, bool(rel.spearman > 0.5)
    (6, True)
    >>> expected = stats.spearmanr(rel.points.mi, rel.points.accuracy)
    >>> bool(abs(rel.spearman - expected.statistic) < 1e-12)
    True
    >>> rel.n_strata, rel.n_checkpoints, rel.n_permutations, rel.p_value
    (2, 3, 2, 0.5)
    """
    from matprobe.progress import track
    from matprobe.theory.relate import relate as run_relate
    from matprobe.theory.relate import write_relation

    if isinstance(stores, (str, Path)):
        stores = [stores]
    with track("relate", None, enabled=progress) as bar:
        bar.update(description=f"I(Z;{target}|M,A,T) on {len(stores)} store(s)")
        rel = run_relate(list(stores), target=target, layer=layer, pool=pool, estimator=estimator, seeds=seeds,
                         folds=folds, pca=pca or None, level=level, min_stratum=min_stratum, unit=unit)
        bar.advance()
    if out is not None:
        write_relation(rel, out)
    return rel


# ------------------------------------------------------------------------------ theory


@_python_words
def check(store: PathLike, mi=None, *, out: Optional[PathLike] = None, target: Optional[str] = None,
          estimate: bool = True, delta: float = DEFAULTS.delta, level: float = DEFAULTS.level,
          emp_risk: Optional[float] = None, n_train: Optional[int] = None, params: Optional[float] = None,
          bits_per_param: float = 16.0, progress: bool = True, **kwargs) -> CheckResult:
    """Fano and PAC theory held against the stored answers and MI estimates (`matprobe check`).

    Parameters
    ----------
    store : str or Path
        HDF5 store with the model's answers.
    mi : str, Path, ChainResult or dict, optional
        MI results: a file from ``matprobe mi --out``, the `mi` result itself, or None.
        When they hold I(Z;Y|M,A,T) per stratum (``mp.mi(..., factors="M,A,T,Y")``), that
        estimate is used; otherwise it is estimated here on their layer and pool with their
        settings (``estimate=False``: not estimated; the result names the `mi` command).
    out : str or Path, optional
        Write the check JSON here (the CLI's ``--out``, default ``check.json`` there).
    target : {"answer", "label"}, optional
        Y: default the MI results' target, else the answer index.
    estimate : bool, default True
        Estimate I(Z;Y|M,A,T) when the MI results lack it.
    delta : float, default 0.05
        Failure probability of the finite-sample bounds.
    level : float, default 0.95
        Level of the error intervals.
    emp_risk, n_train, params, bits_per_param
        Training risk, training samples, parameter count and bits per parameter for PAC bounds.
    progress : bool, default True

    Returns
    -------
    CheckResult
        ``.frame()``, ``.to_table()``, ``.tables(unit)``, ``.to_dict()`` (the check JSON);
        ``.estimated_here`` is None when the MI results already held the Y term.

    Examples
    --------
    A model that answers 240 of 300 items right; the held-out PAC bound is the binomial tail
    inversion, scipy's beta quantile (Clopper-Pearson upper limit at 1 - delta):

    >>> import tempfile, numpy as np, matprobe as mp
    >>> from scipy import stats
    >>> path, rng, n = tempfile.mkdtemp() + "/s.h5", np.random.default_rng(0), 300
    >>> y = rng.integers(0, 2, n)
    >>> pred = np.where(np.arange(n) < 240, y, 1 - y)
    >>> mp.EmbeddingStore.from_arrays(
    ...     path, [f"s{i}" for i in range(n)],
    ...     {"modality": ["CT"] * n, "anatomy": ["Chest"] * n, "task": ["Cls"] * n, "answer_index": y},
    ...     {("3", "last"): rng.standard_normal((n, 2)).astype("float32")}, answers={"pred": pred}).close()
    >>> chk = mp.check(path, estimate=False, progress=False)
    >>> chk.pac.m, chk.pac.errors, chk.pac.error
    (300, 60, 0.2)
    >>> bool(abs(chk.pac.test_set_bound - stats.beta.ppf(0.95, 60 + 1, 300 - 60)) < 1e-12)
    True
    """
    from matprobe.mi.chain import ChainResult, results_json
    from matprobe.theory.check import run_check, write_check

    if "estimate_missing" in kwargs:  # the earlier API name of `estimate`
        estimate = kwargs.pop("estimate_missing")
    if isinstance(mi, ChainResult):
        meta = mi.meta or {}
        mi = results_json(mi, store=str(meta.get("store", store)), fingerprint=meta.get("fingerprint", ""),
                          layer=str(meta.get("layer", "")), pool=str(meta.get("pool", "")))
    res = run_check(store, mi, target=target, delta=delta, level=level, emp_risk=emp_risk, n_train=n_train,
                    params=params, bits_per_param=bits_per_param, estimate_missing=estimate,
                    progress=progress, **kwargs)
    if out is not None:
        write_check(res, out)
    return res


# ------------------------------------------------------------------------------ statistics


@_python_words
def significance(results, spec=None, *, unit: str = "auto", mixed: bool = False,
                 metric: Optional[Union[str, Sequence[str]]] = None, items: bool = False,
                 n_boot: int = DEFAULTS.n_boot, family: str = "all", alpha: float = 0.05,
                 level: float = DEFAULTS.level, percent: bool = False, out: Optional[PathLike] = None,
                 **kwargs) -> SignificanceResult:
    """Paired tests between conditions in CrossMed Table IX's layout (`matprobe significance`).

    Parameters
    ----------
    results : str, Path or DataFrame
        Tidy table: condition, target, seed, item (optional), metric, value (e.g. a run's
        ``results.csv``).
    spec : str, Path or list, optional
        Comparisons, one ``"A vs B"`` per line; default: those present in the data.
    unit : {"auto", "target", "seed", "item"}, default "auto"
        Unit of analysis (auto: target with >= 2 targets, else seed).
    mixed : bool, default False
        Add a MixedLM fit (random intercept per target).
    metric : str or list of str, optional
        Metric(s) to test; default all.
    items : bool, default False
        Item-level paired bootstrap and McNemar.
    n_boot : int, default 2000
        Bootstrap resamples for ``items``.
    family : {"all", "metric"}, default "all"
        Holm/BH family.
    alpha : float, default 0.05
        Level for the "exact test cannot reach it" warning.
    level : float, default 0.95
        Level of the intervals of the differences.
    percent : bool, default False
        Accuracy-like metrics are in percent on purpose (as published tables are): test them in
        percentage points. Without it a metric in percent is refused.
    out : str or Path, optional
        Write FILE.csv (all numbers), FILE.md or FILE.tex.
    **kwargs
        Passed to `matprobe.stats.significance.significance` (e.g. ``seed``).

    Returns
    -------
    SignificanceResult
        ``.results`` (DataFrame), ``.to_table()``, ``.tables()``, ``.notes()``.

    Examples
    --------
    Accuracy of three Related and three Unrelated runs, paired by seed; the paired t-test is
    scipy's `ttest_rel` on the same pairs:

    >>> import pandas as pd, matprobe as mp
    >>> from scipy import stats
    >>> related, unrelated = [0.71, 0.74, 0.69], [0.62, 0.66, 0.61]
    >>> rows = pd.DataFrame([{"condition": c, "target": "CT,Chest,Classification", "seed": s, "item": "",
    ...                       "metric": "accuracy", "value": v}
    ...                      for c, vals in (("Related", related), ("Unrelated", unrelated))
    ...                      for s, v in enumerate(vals)])
    >>> row = mp.significance(rows).results.iloc[0]
    >>> row.comparison, round(float(row.mean_diff), 3), int(row.n_pairs)
    ('Related vs. Unrelated', 0.083, 3)
    >>> bool(abs(row.p - stats.ttest_rel(related, unrelated).pvalue) < 1e-12)
    True
    """
    from matprobe.present import significance as formatting
    from matprobe.stats.significance import significance as run

    metrics = [metric] if isinstance(metric, str) else (list(metric) if metric is not None else None)
    res = run(results, spec, unit=unit, mixed=mixed, metrics=metrics, item_level=items, n_resamples=n_boot,
              family=family, alpha=alpha, level=level, percent=percent, **kwargs)
    if out is not None:  # what `matprobe significance --out` writes
        formatting.write_output(res, out)
    return res


@_python_words
def significance_summary(summary: Union[PathLike, pd.DataFrame], out: Optional[PathLike] = None,
                         percent: bool = False) -> SummaryResult:
    """Paired p from mean ± sd and n over the unknown correlation r (`matprobe significance-summary`).

    Parameters
    ----------
    summary : str, Path or DataFrame
        CSV: comparison, metric, mean_a, sd_a, mean_b, sd_b, n, reported_p (optional, e.g.
        '0.004' or '< 0.001'). Each mean, sd and reported p is taken to lie within half a unit
        of its last written decimal (0.0141: 0.01405 to 0.01415), as a rounded published number.
    out : str or Path, optional
        Write FILE.csv, FILE.md or FILE.tex.
    percent : bool
        Accuracy-like metrics are in percent (0-100) on purpose: their mean difference is in
        percentage points (otherwise refused, as in `significance`).

    Returns
    -------
    SummaryResult
        `.results` (`.frame()`): one row per input row: the paired p at each r, its range over
        r as given (p_min, p_max) and within the rounding (p_min_rounding, p_max_rounding), the
        two-sample p (p_independent, df 2n-2), the implied r as given and within the rounding
        (implied_r_low, implied_r_high), the unit of mean_diff; `.to_table()` the display;
        `.notes()` the warnings.

    Examples
    --------
    Three paired runs reported as 0.72 ± 0.02 vs 0.65 ± 0.03: at correlation r the paired
    t-test's SD of the differences is sqrt(sd_a² + sd_b² - 2 r sd_a sd_b); at r = 0 that is the
    t distribution's tail below, and the two-sample p is scipy's t-test of independent samples
    from the same summaries (df 2n - 2, not a paired p):

    >>> import tempfile, numpy as np, pandas as pd, matprobe as mp
    >>> from scipy import stats
    >>> path = tempfile.mkdtemp() + "/summary.csv"
    >>> pd.DataFrame([{"comparison": "Related vs. Unrelated", "metric": "accuracy", "mean_a": 0.72,
    ...                "sd_a": 0.02, "mean_b": 0.65, "sd_b": 0.03, "n": 3}]).to_csv(path, index=False)
    >>> res = mp.significance_summary(path)
    >>> row = res.results.iloc[0]
    >>> t0 = 0.07 / np.sqrt((0.02 ** 2 + 0.03 ** 2) / 3)
    >>> bool(abs(row["p_r=0"] - 2 * stats.t.sf(t0, 2)) < 1e-12), row.unit
    (True, 'fraction')
    >>> unpaired = stats.ttest_ind_from_stats(0.72, 0.02, 3, 0.65, 0.03, 3).pvalue
    >>> bool(abs(row.p_independent - unpaired) < 1e-12), bool(row.p_min < row["p_r=0"] < row.p_max)
    (True, True)
    >>> bool(row.p_min_rounding < row.p_min and row.p_max < row.p_max_rounding)  # ± 0.005 each
    True
    >>> res.to_table().headers()[3]
    'Mean diff (fraction)'
    """
    from matprobe.present import significance as formatting
    from matprobe.stats.summary import summarize

    res = summarize(summary, percent=percent)
    if out is not None:
        formatting.write_frame(res.results, formatting.summary_display(res.results), out,
                               "Paired p from summary statistics")
    return res


# ------------------------------------------------------------------------------ runs and reports


@dataclass(frozen=True)
class ReportFiles:
    """The files `report` wrote."""

    markdown: Path
    html: Path
    figures: Path


@dataclass(frozen=True)
class RunResult:
    """A run directory written by `run` or `demo`."""

    run_dir: Path

    @property
    def report_md(self) -> Path:
        return self.run_dir / "report.md"

    @property
    def report_html(self) -> Path:
        return self.run_dir / "report.html"

    def frame(self) -> pd.DataFrame:
        """The run's results table (condition, target, seed, metric, value)."""
        import pandas as pd

        return pd.read_csv(self.run_dir / "results.csv")


@_python_words
def report(run_dir: PathLike) -> ReportFiles:
    """Write report.md, a self-contained report.html and figures for a run (`matprobe report`).

    Parameters
    ----------
    run_dir : str or Path
        Run directory written by `run` or `demo`.

    Returns
    -------
    ReportFiles
        ``.markdown``, ``.html``, ``.figures`` (paths).

    Examples
    --------
    A run of two stores on three triplets (the held-out one, a Related and an Unrelated one);
    its report is written again from the run's files alone:

    >>> import json, tempfile, numpy as np, matprobe as mp
    >>> folder, rng, n = tempfile.mkdtemp(), np.random.default_rng(1), 120
    >>> mat = np.array([("MRI", "Brain", "Plane"), ("CT", "Chest", "Grade"), ("MRI", "Knee", "Plane")])
    >>> mat, y = mat[np.arange(n) % 3], (np.arange(n) // 3) % 2
    >>> with open(f"{folder}/items.jsonl", "w") as fh:
    ...     for i, (m, a, t) in enumerate(mat):
    ...         print(json.dumps({"id": f"q{i}", "question": "Which?", "options": ["yes", "no"],
    ...                           "answer": "AB"[y[i]], "modality": m, "anatomy": a, "task": t}), file=fh)
    >>> labels = {**dict(zip(("modality", "anatomy", "task"), mat.T)), "answer_index": y,
    ...           "label": np.array(["A", "B"])[y]}
    >>> stores = [f"{folder}/related-s0.h5", f"{folder}/unrelated-s0.h5"]
    >>> for store in stores:
    ...     z = y[:, None] + rng.standard_normal((n, 3))
    ...     mp.EmbeddingStore.from_arrays(store, [f"q{i}" for i in range(n)], labels,
    ...                                   {("3", "last"): z.astype("float32")}, answers={"pred": y}).close()
    >>> path = mp.init(data=f"{folder}/items.jsonl", target=["MRI,Knee,Plane"], store=stores,
    ...                out=f"{folder}/study.toml", seeds=1, folds=2)
    >>> run_dir = mp.run(path, progress=False).run_dir
    >>> (run_dir / "report.md").unlink()
    >>> files = mp.report(run_dir)
    >>> files.markdown.read_text().splitlines()[0]
    '# matprobe report'
    >>> html = files.html.read_text()  # self-contained: figures are embedded, not linked
    >>> "data:image/png;base64," in html, sorted(p.name for p in files.figures.glob("*.png"))[:2]
    (True, ['composition.png', 'fano.png'])
    """
    from matprobe.report.render import write_report

    paths = write_report(run_dir)
    return ReportFiles(Path(paths["markdown"]), Path(paths["html"]), Path(paths["figures"]))


def _status_printer():
    import time

    from matprobe.progress import is_quiet, say

    t0 = time.perf_counter()

    def show(msg: str) -> None:
        if not is_quiet():
            say(f"{time.perf_counter() - t0:6.1f} s {msg}")

    return show


@_python_words
def init(checkpoints: Optional[Sequence[PathLike]] = None, data: Optional[PathLike] = None,
         target: Optional[Sequence[str]] = None, *,
         out: PathLike = Path("pipeline.toml"), run_out: Optional[str] = None,
         store: Optional[Sequence[PathLike]] = None,
         base: Optional[PathLike] = None, layers: str = "-1", pool: str = DEFAULTS.pool, device: str = "cpu",
         dtype: str = "fp32", image_root: Optional[PathLike] = None, seeds: int = DEFAULTS.seeds,
         folds: int = DEFAULTS.folds, overwrite: bool = False, vision_tower: Optional[PathLike] = None,
         template: Optional[str] = None, columns: Optional[Union[str, dict]] = None,
         task_level: str = "subset") -> Path:
    """Write a commented pipeline file for your own checkpoints or stores (`matprobe init`).

    Parameters
    ----------
    checkpoints : sequence of paths
        Fine-tuned checkpoint folders (``config.json``, or ``adapter_config.json`` for LoRA), each
        named by condition and seed, e.g. ``ckpts/related-s0``, or ``"NAME=PATH"`` where the path
        names neither (``"related-s0=saves/sft"``).
    data : str or Path
        The MAT manifest the checkpoints are evaluated on.
    target : sequence of str
        Held-out triplets ``"Modality,Anatomy,Task"``; with several, each path names its target.
    out : str or Path, default "pipeline.toml"
        The pipeline file to write; refused if it exists unless ``overwrite``.
    store : sequence of paths
        Stores extracted already (named by condition and seed), instead of checkpoints.
    layers, pool, device, dtype, image_root, seeds, folds, base, run_out
        As ``matprobe init --help`` says; written into the file, which you may edit.
    vision_tower, template
        For checkpoints in the original LLaVA format: the local CLIP tower folder their configs
        name, and the conversation template (``--template`` also applies to llava and llava_next).
    columns : str or dict
        Your manifest's column names read as the expected ones (``"organ_site=anatomy"`` or
        ``{"organ_site": "anatomy"}``), written into the file's ``[data] columns``.
    task_level : {"subset", "group"}, default "subset"
        Med-MAT files only: Table 9's task of each subset, or the paper's coarse tasks (COVID,
        Cancer, State, ...), by which Med-MAT draws Related and Unrelated; written into ``[data]``.

    Returns
    -------
    Path
        The file written; run it with ``mp.run(path)``.

    Examples
    --------
    Two stores extracted already, named by condition and seed; the manifest holds the target, a
    triplet related to it (two of M, A, T shared) and an unrelated one (at most one shared), the
    two conditions' training data. The file is TOML (read back here by the standard library's
    parser), one ``[[checkpoints]]`` entry per store:

    >>> import json, tempfile, tomllib, numpy as np, matprobe as mp
    >>> folder, n = tempfile.mkdtemp(), 9
    >>> rows = [{"id": f"q{i}", "question": "Which plane?", "options": ["axial", "coronal"], "answer": "A",
    ...          "modality": ["MRI", "MRI", "CT"][i % 3], "anatomy": ["Knee", "Brain", "Chest"][i % 3],
    ...          "task": "Plane"} for i in range(n)]
    >>> with open(f"{folder}/manifest.jsonl", "w") as fh:
    ...     for r in rows:
    ...         print(json.dumps(r), file=fh)
    >>> for name in ("related-s0", "unrelated-s0"):
    ...     mp.EmbeddingStore.from_arrays(f"{folder}/{name}.h5", [r["id"] for r in rows],
    ...         {k: [r[k] for r in rows] for k in ("modality", "anatomy", "task")},
    ...         {("3", "last"): np.zeros((n, 2), "float32")}).close()
    >>> path = mp.init(data=f"{folder}/manifest.jsonl", target=["MRI,Knee,Plane"], seeds=2,
    ...                store=[f"{folder}/related-s0.h5", f"{folder}/unrelated-s0.h5"], out=f"{folder}/study.toml")
    >>> cfg = tomllib.loads(path.read_text())
    >>> cfg["design"]["target"], cfg["mi"]["seeds"]
    (['MRI', 'Knee', 'Plane'], 2)
    >>> [(c["name"], c["condition"], c["seed"]) for c in cfg["checkpoints"]]
    [('related-s0', 'related', 0), ('unrelated-s0', 'unrelated', 0)]
    """
    from matprobe.scaffold import init_pipeline

    if data is None or not target:
        raise ValueError("init needs data= (the manifest) and target= (one or more 'M,A,T' triplets)")
    targets = [target] if isinstance(target, str) else list(target)
    return init_pipeline(data, tuple(checkpoints or ()), targets=targets, out=out, run_out=run_out, stores=tuple(store or ()),
                         base=str(base) if base else None, layers=layers, pools=pool, device=device, dtype=dtype,
                         image_root=str(image_root) if image_root else None, seeds=seeds, folds=folds,
                         overwrite=overwrite, vision_tower=_opt_str(vision_tower), template=template,
                         columns=columns, task_level=task_level)


@_python_words
def run(pipeline: PathLike, out: Optional[PathLike] = None, *, progress: bool = True) -> RunResult:
    """Run a pipeline file: data, checkpoints, extract, mi, check, significance, report (`matprobe run`).

    Parameters
    ----------
    pipeline : str or Path
        Pipeline TOML (see ``experiments/demo/pipeline.toml``).
    out : str or Path, optional
        Run directory, instead of the file's ``[run] out``.
    progress : bool, default True
        Status lines and progress bars.

    Returns
    -------
    RunResult
        ``.run_dir``, ``.report_md``, ``.report_html``, ``.frame()`` (results.csv).

    Examples
    --------
    A small study of your own: a manifest, and per condition and seed a store you extracted
    (here written from arrays: features that carry the right answer clearly after Related
    training, weakly after Unrelated, and predictions right 80% / 60% of the time):

    >>> import json, tempfile, numpy as np, matprobe as mp
    >>> folder, rng, n = tempfile.mkdtemp(), np.random.default_rng(0), 160
    >>> triplets = [("CT", "Chest", "Plane"), ("MRI", "Brain", "Plane"), ("MRI", "Knee", "Plane"),
    ...             ("CT", "Knee", "Grade")]
    >>> y = (np.arange(n) // 4) % 2  # the right option: A or B, balanced within every triplet
    >>> rows = [{"id": f"q{i}", "question": "Which?", "options": ["yes", "no"], "answer": "AB"[y[i]],
    ...          **dict(zip(("modality", "anatomy", "task"), triplets[i % 4]))} for i in range(n)]
    >>> with open(f"{folder}/manifest.jsonl", "w") as fh:
    ...     for r in rows:
    ...         print(json.dumps(r), file=fh)
    >>> labels = {k: [r[k] for r in rows] for k in ("modality", "anatomy", "task")}
    >>> labels.update(answer_index=y, label=[r["answer"] for r in rows])
    >>> stores, preds = [], {}
    >>> for condition, signal, accuracy in (("related", 2.0, 0.8), ("unrelated", 0.5, 0.6)):
    ...     for seed in (0, 1):
    ...         z = signal * y[:, None] + rng.standard_normal((n, 4))
    ...         preds[condition, seed] = np.where(rng.random(n) < accuracy, y, 1 - y)
    ...         stores.append(f"{folder}/{condition}-s{seed}.h5")
    ...         mp.EmbeddingStore.from_arrays(stores[-1], [r["id"] for r in rows], labels,
    ...             {("3", "last"): z.astype("float32")}, answers={"pred": preds[condition, seed]}).close()
    >>> path = mp.init(data=f"{folder}/manifest.jsonl", target=["MRI,Knee,Plane"], store=stores,
    ...                out=f"{folder}/study.toml", seeds=1, folds=2)
    >>> res = mp.run(path, progress=False)
    >>> table = res.frame()
    >>> accuracy = table[table.metric == "accuracy"].set_index(["condition", "seed"]).value
    >>> target = (np.arange(n) % 4) == 2  # the rows of the held-out triplet (MRI, Knee, Plane)
    >>> expected = {(c.title(), s): (p[target] == y[target]).mean() for (c, s), p in preds.items()}
    >>> bool(np.allclose([accuracy[k] for k in expected], list(expected.values())))
    True
    >>> info = table[table.metric == "I(Z;label|modality,anatomy,task) nats"].groupby("condition").value.mean()
    >>> bool(info["Related"] > info["Unrelated"])  # the answer is easier to read after Related training
    True
    >>> res.report_html.exists(), sorted(p.name for p in (res.run_dir / "mi").glob("*.json"))[:2]
    (True, ['related-s0__3__last.json', 'related-s1__3__last.json'])
    """
    from matprobe.pipeline import load_pipeline, run_pipeline

    cfg = load_pipeline(pipeline)
    if out is not None:
        cfg.out = str(out)
    return RunResult(Path(run_pipeline(cfg, progress=_status_printer() if progress else None,
                                       progress_bars=progress)))


@_python_words
def demo(out: PathLike = Path("reports/demo"), quick: bool = False, workers: int = 0, *,
         progress: bool = True) -> RunResult:
    """The whole study on the embedded demo data and tiny models, CPU only (`matprobe demo`).

    Parameters
    ----------
    out : str or Path, default "reports/demo"
        Run directory.
    quick : bool, default False
        Smaller data, fewer steps and seeds (about a minute).
    workers : int, default 0
        Processes for fine-tuning (0 = up to 4, one per core).
    progress : bool, default True

    Returns
    -------
    RunResult

    Examples
    --------
    Not run as a doctest (a minute of CPU): the suite runs this same call once
    (``matprobe demo --quick``, the ``quick_demo`` fixture) and checks its report.

    >>> import matprobe as mp
    >>> res = mp.demo("reports/quick", quick=True)  # doctest: +SKIP
    >>> res.frame().metric.unique()[:2]  # doctest: +SKIP
    array(['accuracy', 'I(Z;modality) nats'], dtype=object)
    """
    from matprobe.pipeline import demo_config, run_pipeline

    cfg = demo_config(quick=quick, out=str(out))
    cfg.workers = workers
    return RunResult(Path(run_pipeline(cfg, progress=_status_printer() if progress else None,
                                       progress_bars=progress)))


# ------------------------------------------------------------------------------ stores


def open_store(path: PathLike, mode: str = "r") -> EmbeddingStore:
    """An EmbeddingStore (use as a context manager: ``with mp.open_store(p) as st: ...``).

    Examples
    --------
    >>> import tempfile, numpy as np, matprobe as mp
    >>> path = tempfile.mkdtemp() + "/s.h5"
    >>> mp.EmbeddingStore.from_arrays(path, ["a", "b", "c"], {"modality": ["CT", "MRI", "CT"]},
    ...                               {("3", "last"): np.eye(3, dtype="float32")}).close()
    >>> with mp.open_store(path) as st:
    ...     st.n, st.feature_keys(), st.factor("M")
    (3, [('3', 'last')], (array([0, 1, 0]), ('CT', 'MRI')))
    """
    from matprobe.store import EmbeddingStore

    return EmbeddingStore.open(path, mode)


@_python_words
def store_info(file: PathLike) -> dict:
    """Samples, feature arrays, answers and provenance of a store (`matprobe store info --json`).

    Returns
    -------
    dict
        The document ``store info --json`` prints (path, n_samples, features, label_columns,
        accuracy, by_triplet, provenance, ...).

    Examples
    --------
    >>> import tempfile, numpy as np, matprobe as mp
    >>> path = tempfile.mkdtemp() + "/info.h5"
    >>> labels = {"modality": ["CT", "CT", "MRI", "MRI"], "task": ["Cls", "Seg", "Cls", "Seg"]}
    >>> features = {("0", "last"): np.zeros((4, 8), "float32"), ("0", "image"): np.ones((4, 8), "float32")}
    >>> mp.EmbeddingStore.from_arrays(path, ["w", "x", "y", "z"], labels, features).close()
    >>> info = mp.store_info(path)
    >>> info["n_samples"], info["label_columns"]
    (4, {'modality': ['CT', 'MRI'], 'task': ['Cls', 'Seg']})
    """
    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(file) as st:
        return st.info()


# `mp.mi`, `mp.extract` and `mp.report` share their names with subpackages, and the attribute
# `matprobe.mi` is this function. `import matprobe.mi.registry as r` reads that attribute and,
# finding no `registry` on it, looks up sys.modules[f"{attribute.__name__}.registry"]: naming
# these functions after their packages keeps that import form working.
for _fn in (mi, extract, report):
    _fn.__name__ = f"matprobe.{_fn.__name__}"
del _fn
