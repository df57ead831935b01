"""Command line: thin wrappers that parse, call one library function and print.

Each command imports its library module lazily so `matprobe --help` stays fast
(torch and transformers are only imported by the commands that need them).
Every command section below is owned by one part of the pipeline; keep library
logic out of this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from matprobe.errors import MatprobeError

app = typer.Typer(
    name="matprobe",
    help="Measure how much Modality, Anatomy and Task a vision-language model's embedding encodes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Load, validate and split MAT-tagged datasets.", no_args_is_help=True)
store_app = typer.Typer(help="Inspect HDF5 embedding stores.", no_args_is_help=True)
bounds_app = typer.Typer(help="Fano and PAC bound calculators.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(store_app, name="store")
app.add_typer(bounds_app, name="bounds")

console = Console()
err_console = Console(stderr=True)


def fail(exc: Exception) -> None:
    """Print one clear error line and exit non-zero (no traceback for user errors)."""
    err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def run_user_errors(fn):
    """Turn MatprobeError (bad input) into one line on stderr and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MatprobeError as exc:
            fail(exc)

    return wrapper


@app.callback()
def main_callback(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from matprobe import __version__

        console.print(f"matprobe {__version__}")
        raise typer.Exit()


# ---------------------------------------------------------------- data (foundation)
# <data-commands>
@data_app.command("validate")
@run_user_errors
def data_validate(
    file: Path = typer.Argument(..., help="Med-MAT JSON/JSONL or MAT manifest (JSONL/CSV)."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder that replaces the 'med-mat/' prefix (Med-MAT) or anchors relative image paths."),
    images: bool = typer.Option(True, "--images/--no-images", help="Open every image to check it is readable."),
) -> None:
    """Count samples per (M, A, T) triplet and list every problem found."""
    from rich.table import Table

    from matprobe.data import validate_dataset

    report = validate_dataset(file, image_root=image_root, check_images=images)
    table = Table(title=f"{file} ({report.format}, {report.n_records} records)")
    for col in ("modality", "anatomy", "task", "n"):
        table.add_column(col, justify="right" if col == "n" else "left")
    for row in report.triplet_counts.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for problem in report.problems:
        err_console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if report.problems:
        err_console.print(f"{len(report.problems)} problem(s) found")
        raise typer.Exit(code=1)
    console.print("no problems found")


@data_app.command("split")
@run_user_errors
def data_split(
    file: Path = typer.Argument(..., help="Dataset file (Med-MAT or MAT manifest)."),
    target: str = typer.Option(..., "--target", help="Held-out triplet 'Modality,Anatomy,Task', e.g. 'CT,Lung,Classification'."),
    config: str = typer.Option("related", "--config", help="related | unrelated | zero-overlap | leave-one-out"),
    out: Path = typer.Option(..., "--out", help="Output manifest (JSONL) with split = train/test."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Remap image paths (see data validate)."),
) -> None:
    """Write the training split for a target triplet by MAT overlap (CrossMed §III, §V)."""
    from matprobe.data import load_dataset, make_split, write_manifest
    from matprobe.data.splits import SplitConfig

    try:
        cfg = SplitConfig(config)
    except ValueError:
        raise typer.BadParameter(f"--config {config!r}: use one of {', '.join(c.value for c in SplitConfig)}") from None
    split = make_split(load_dataset(file, image_root=image_root), target, cfg)
    write_manifest(split, out)
    counts = split.frame().groupby(["split", "modality", "anatomy", "task"]).size()
    console.print(counts.to_string())
    console.print(f"wrote {len(split)} samples to {out}")
# </data-commands>

# ---------------------------------------------------------------- store (foundation)
# <store-commands>
@store_app.command("info")
@run_user_errors
def store_info(
    file: Path = typer.Argument(..., help="HDF5 store written by `matprobe extract`."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Samples, feature arrays, answers and provenance of a store."""
    import json

    from rich.table import Table

    from matprobe.store import EmbeddingStore

    with EmbeddingStore.open(file) as store:
        info = store.info()
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    console.print(f"[bold]{info['path']}[/]: {info['n_done']} / {info['n_samples']} samples done"
                  + (" (virtual merge)" if info["virtual"] else ""))
    acc = info["accuracy"]
    console.print(f"answers stored: {info['answers_stored']}" + (f", accuracy {acc:.3f}" if acc is not None else ""))
    if info["answers_stored"]:
        scores = Table(title="answers per (M, A, T): accuracy; cIoU = Σ I / Σ U over segmentation items")
        for col in ("modality", "anatomy", "task", "n", "accuracy", "seg. items", "cIoU"):
            scores.add_column(col, justify="left" if col in ("modality", "anatomy", "task") else "right")
        for r in info["by_triplet"]:
            scores.add_row(str(r.get("modality")), str(r.get("anatomy")), str(r.get("task")), str(r["answered"]),
                           "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}",
                           str(r["n_segmentation"]) if r["n_segmentation"] else "-",
                           "-" if r["cIoU"] is None else f"{r['cIoU']:.3f}")
        console.print(scores)
    table = Table(title="features (float32)")
    for col in ("layer", "pool", "dim"):
        table.add_column(col)
    for f in info["features"]:
        table.add_row(str(f["layer"]), f["pool"], str(f["dim"]))
    console.print(table)
    for col, labels in info["label_columns"].items():
        console.print(f"{col}: {len(labels)} labels ({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''})")
    console.print("provenance:")
    for k, v in sorted(info["provenance"].items()):
        console.print(f"  {k}: {v}", highlight=False)
# </store-commands>

# ---------------------------------------------------------------- extract
# <extract-commands>
@app.command("extract")
@run_user_errors
def extract_command(
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="Local HF checkpoint folder (llava, qwen2_vl, qwen2_5_vl), or a LoRA adapter folder."),
    data: Path = typer.Option(..., "--data", help="Med-MAT JSON/JSONL or MAT manifest."),
    out: Path = typer.Option(..., "--out", help="HDF5 store to write (resumed if it exists)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="peft LoRA adapter folder applied to --ckpt."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base checkpoint of the adapter (overrides the path stored in it)."),
    layers: str = typer.Option("8,16,-1", "--layers", help="Decoder block outputs from 0; negatives from the end; 'final' after the norm; 'embed'."),
    pool: str = typer.Option("last,image,question,mean", "--pool", help="Pools: last, image (the question image), question, mean; option_images for multi-image prompts."),
    batch_size: int = typer.Option(8, "--batch-size", help="Samples per forward."),
    dtype: str = typer.Option("fp32", "--dtype", help="bf16 | fp16 | fp32 (features are stored in fp32)."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda (cuda:<local rank> under torchrun)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Qwen image cap in pixels (tokens = pixels / 784)."),
    answers: Optional[bool] = typer.Option(None, "--answers/--no-answers", help="Store the model's option answers (default: on for multiple-choice data)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again instead of resuming."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder that relative image paths resolve against."),
    merge_adapter: bool = typer.Option(True, "--merge-adapter/--no-merge-adapter", help="Merge LoRA weights into the base (same result, faster)."),
    rendering: str = typer.Option("multi-image", "--rendering", help="Segmentation items (mask options): multi-image (question image + one overlay per candidate) | grid (one 2x2 composite)."),
) -> None:
    """Pooled hidden states (and the model's answers) of a VLM into an HDF5 store."""
    from matprobe.extract.runner import ExtractConfig, extract

    result = extract(
        ExtractConfig(
            ckpt=str(ckpt) if ckpt else None, data=str(data), out=str(out), layers=layers,
            pools=pool, batch_size=batch_size, dtype=dtype, device=device,
            adapter=str(adapter) if adapter else None, base=str(base) if base else None,
            max_pixels=max_pixels, answers=answers, overwrite=overwrite,
            image_root=str(image_root) if image_root else None, merge_adapter=merge_adapter,
            rendering=rendering,
        ),
        progress=True,
    )
    acc = "" if result.accuracy is None else f", accuracy {result.accuracy:.3f}"
    console.print(
        f"{result.out}: {result.n_resumed + result.n_computed} of {result.n_total} rows on this "
        f"process ({result.n_computed} computed, {result.n_resumed} resumed) at "
        f"{result.samples_per_s:.2f} samples/s; layers {','.join(result.layers)}; "
        f"pools {','.join(result.pools)}{acc}",
        highlight=False, soft_wrap=True,
    )
# </extract-commands>

# ---------------------------------------------------------------- mi
# <mi-commands>
@app.command("mi")
@run_user_errors
def mi_command(
    store: Path = typer.Argument(..., help="HDF5 embedding store."),
    factors: str = typer.Option("M,A,T", "--factors", help="Chain order, comma-separated label columns."),
    layer: str = typer.Option(..., "--layer", help="Layer key as stored (e.g. 16, final)."),
    pool: str = typer.Option("last", "--pool", help="Pooling key as stored."),
    estimator: str = typer.Option("probe", "--estimator", help="Comma list: probe, mine, nwj, infonce, smile, ksg."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds per estimate."),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-fitting folds."),
    pca: Optional[int] = typer.Option(64, "--pca", help="PCA dims fitted on training folds (0 = none)."),
    bits: bool = typer.Option(False, "--bits", help="Report bits instead of nats."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.json (results) or FILE.csv (table)."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the critics (cpu, cuda)."),
) -> None:
    """Estimate the MI chain I(Z;M) + I(Z;A|M) + I(Z;T|M,A) and the direct I(Z;M,A,T)."""
    from rich.table import Table

    from matprobe.mi.chain import check_out_path, run_store, write_results

    if out is not None:
        check_out_path(out)
    unit = "bits" if bits else "nats"
    names = [f.strip() for f in factors.split(",") if f.strip()]
    ests = [e.strip() for e in estimator.split(",") if e.strip()]
    result, meta = run_store(store, names, layer, pool, estimators=ests, seeds=seeds, folds=folds,
                             pca=pca or None, unit=unit, device=device)
    table = Table(title=f"MI chain ({unit}), {meta['store']} layer {layer} pool {pool}")
    for col in ("term", "estimator", "estimate", "90% interval", "H limit", "chain diff.", "note"):
        table.add_column(col)
    frame = result.frame()
    for row in frame.itertuples():
        interval = "" if row.ci_low != row.ci_low else f"[{row.ci_low:.3f}, {row.ci_high:.3f}]"
        diff = "" if row.chain_difference != row.chain_difference else f"{row.chain_difference:.3f}"
        table.add_row(row.term, row.estimator, f"{row.estimate:.3f}", interval, f"{row.h_upper:.3f}",
                      diff, row.note)
    console.print(table)
    for term, agr in result.agreement().items():
        if len(ests) > 1:
            console.print(f"{term}: estimators spread {agr['spread']:.3f} {unit}; intervals "
                          + ("overlap" if agr["intervals_overlap"] else "do not overlap"))
    if out is not None:
        write_results(result, out, store=meta["store"], fingerprint=meta["fingerprint"],
                      layer=meta["layer"], pool=meta["pool"])
        console.print(f"wrote {out}")
# </mi-commands>

# ---------------------------------------------------------------- bounds / check (theory)
# <theory-commands>
@bounds_app.command("fano")
@run_user_errors
def bounds_fano(
    error: float = typer.Option(..., "--error", help="Error rate ε as a fraction (0.168)."),
    classes: int = typer.Option(..., "--classes", help="Number of classes K (answer options)."),
    entropy: Optional[float] = typer.Option(None, "--entropy", help="H(Y|C), e.g. H(T|M,A)."),
    marginal_entropy: Optional[float] = typer.Option(
        None, "--marginal-entropy", help="H(Y) (the paper's H(T)), to audit eq. 8."),
    mi: Optional[float] = typer.Option(None, "--mi", help="An MI value: smallest error it allows."),
    unit: str = typer.Option("nats", "--unit", help="nats or bits (inputs and outputs)."),
) -> None:
    """Fano's bounds side by side, the paper's form (CrossMed eq. 7-8) included."""
    from rich.table import Table

    from matprobe.theory.fano import fano_table

    rows = fano_table(error, classes, entropy, marginal_entropy, mi, unit)
    table = Table(title=f"Fano, ε = {error}, K = {classes}")
    for col in ("quantity", "value", "unit", "note"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["quantity"], f"{r['value']:.6g}", r["unit"], r["note"])
    console.print(table)


@bounds_app.command("pac")
@run_user_errors
def bounds_pac(
    emp_risk: float = typer.Option(..., "--emp-risk", help="Empirical (training) risk R̂ in [0, 1]."),
    n: int = typer.Option(..., "--n", help="Training samples n."),
    params: Optional[float] = typer.Option(None, "--params", help="Parameter count (7e9)."),
    bits: float = typer.Option(16.0, "--bits", help="Bits per parameter."),
    ln_h: Optional[float] = typer.Option(None, "--ln-h", help="ln|H| in nats (instead of params×bits)."),
    kl: Optional[float] = typer.Option(None, "--kl", help="KL(Q||P) in nats for the PAC-Bayes bounds."),
    delta: float = typer.Option(0.05, "--delta", help="Failure probability δ in (0, 1)."),
    test_errors: Optional[int] = typer.Option(None, "--test-errors", help="Held-out errors k."),
    test_n: Optional[int] = typer.Option(None, "--test-n", help="Held-out samples m."),
) -> None:
    """PAC bounds on the true risk side by side; vacuous ones (>= 1) are flagged."""
    from rich.table import Table

    from matprobe.theory.pac import pac_bounds

    bounds = pac_bounds(emp_risk, n, delta, params=params, bits=bits, ln_h=ln_h, kl_qp=kl,
                        test_errors=test_errors, test_n=test_n)
    table = Table(title=f"PAC bounds on R, R̂ = {emp_risk}, n = {n}, δ = {delta}")
    for col in ("bound", "R <=", "vacuous", "formula", "note"):
        table.add_column(col, overflow="fold")
    for b in bounds:
        table.add_row(b.name, f"{b.value:.6g}", "VACUOUS" if b.vacuous else "no", b.formula, b.note)
    console.print(table)


@app.command("check")
@run_user_errors
def check_cmd(
    store: Path = typer.Argument(..., help="HDF5 embedding store with the model's answers."),
    mi: Optional[Path] = typer.Option(None, "--mi", help="MI results JSON from `matprobe mi --out`."),
    out: Path = typer.Option(Path("check.json"), "--out", help="Where to write the JSON."),
    target: Optional[str] = typer.Option(None, "--target", help="answer or label (default: from MI)."),
    delta: float = typer.Option(0.05, "--delta", help="Failure probability δ in (0, 1)."),
    level: float = typer.Option(0.95, "--level", help="Level of the error intervals."),
    emp_risk: Optional[float] = typer.Option(None, "--emp-risk", help="Training risk, for PAC bounds."),
    n_train: Optional[int] = typer.Option(None, "--n-train", help="Training samples, for PAC bounds."),
    params: Optional[float] = typer.Option(None, "--params", help="Parameter count, for PAC bounds."),
    bits: float = typer.Option(16.0, "--bits", help="Bits per parameter."),
) -> None:
    """Fano and PAC theory held against the stored answers and MI estimates (nats)."""
    from rich.table import Table

    from matprobe.theory.check import run_check, write_check

    res = run_check(store, mi, delta=delta, level=level, target=target, emp_risk=emp_risk,
                    n_train=n_train, params=params, bits=bits)
    write_check(res, out)
    table = Table(title=f"check: Y = {res['target']}, nats, δ = {delta}, {level:.0%} CI")
    for col in ("M", "A", "T", "n", "error [CI]", "H(Y|s)", "Î [CI]", "ε floor", "ε ok",
                "I >= (finite)", "Î ok"):
        table.add_column(col, overflow="fold")
    for r in res["strata"]:
        g, v = r["given"], r["mi"]
        mi_txt = "-" if v is None else f"{v['estimate']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
        floor = "-" if r["error_floor"] is None else f"{r['error_floor']:.3f}"
        table.add_row(g["modality"], g["anatomy"], g["task"], str(r["n"]),
                      f"{r['error']:.3f} [{r['error_ci'][0]:.3f}, {r['error_ci'][1]:.3f}]",
                      f"{r['h_y']:.3f}", mi_txt, floor, r["error_respects_floor"] or "-",
                      f"{r['fano_mi_lower']:.3f} ({r['fano_mi_lower_finite']:.3f})",
                      r["mi_meets_bound"] or "-")
    console.print(table)
    a, p = res["aggregate"], res["pac"]
    console.print(
        f"aggregate: ε = {a['error']:.4f}, H(Y|M,A) = {a['h_y_given_ma']:.4f} nats; "
        f"I(Z;Y|M,A) >= {a['fano_mi_lower_given_ma']:.4f} nats; stratum average "
        f"{a['fano_mi_lower_stratified']:.4f} nats; paper eq. 8 (H(Y)) {a['paper_eq8']:.4f} nats: "
        f"{a['paper_eq8_audit']['verdict']}", highlight=False)
    for t in a["terms"]:
        console.print(f"  {t['term']}: Î = {t['mi']['estimate']:.4f} nats vs bound "
                      f"{t['fano_mi_lower']:.4f} nats ({t['compared_with']}): {t['mi_meets_bound']}",
                      highlight=False)
    console.print(
        f"held-out ({p['heldout']}): {p['errors']}/{p['m']} errors = {p['error']:.4f} "
        f"[{p['error_ci'][0]:.4f}, {p['error_ci'][1]:.4f}]; test-set bound R <= {p['test_set_bound']:.4f}",
        highlight=False)
    for b in p["bounds"]:
        flag = "VACUOUS" if b["vacuous"] else ("CONTRADICTED" if b["contradicted"] else "ok")
        console.print(f"  {b['name']}: R <= {b['value']:.6g} ({flag})", highlight=False)
    console.print(f"wrote {out}", highlight=False)
# </theory-commands>

# ---------------------------------------------------------------- significance
# <significance-commands>
@app.command("significance")
@run_user_errors
def significance_cmd(
    results: Path = typer.Argument(..., help="Tidy CSV: condition, target, seed, item (optional), metric, value."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="Comparisons, one 'A vs B' per line (or JSON); default: CrossMed Table IX's four."),
    unit: str = typer.Option("target", "--unit", help="Unit of analysis: target (seed means), seed (target x seed pairs) or item."),
    mixed: bool = typer.Option(False, "--mixed", help="Add a MixedLM fit: seed-level differences, random intercept per target."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="Metric(s) to test (repeatable); default: all."),
    items: bool = typer.Option(False, "--items", help="Item-level paired bootstrap (ratio metrics recomputed) and McNemar."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Bootstrap resamples for --items."),
    family: str = typer.Option("all", "--family", help="Holm/BH family: all rows, or per metric."),
    alpha: float = typer.Option(0.05, "--alpha", help="Level for the 'exact test cannot reach it' warning."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.csv (all numbers), FILE.md or FILE.tex."),
) -> None:
    """Paired tests between conditions, in CrossMed Table IX's layout (rows comparisons, columns metrics)."""
    from matprobe.stats import formatting
    from matprobe.stats.significance import analyze_file

    tables = analyze_file(results, spec, unit=unit, mixed=mixed, metrics=metric, item_level=items,
                          n_resamples=n_boot, family=family, alpha=alpha)
    res = tables["results"]
    console.print(formatting.rich_table(formatting.table_ix(res), f"p-values (paired t-test), unit: {unit}", index=True))
    effects, p_values = formatting.split_detail(formatting.detail_table(res))
    console.print(formatting.rich_table(effects, "Paired differences (first - second condition)"))
    console.print(formatting.rich_table(p_values, "p-values (two-sided; Holm/BH over the family)"))
    if "items" in tables:
        console.print(formatting.rich_table(formatting.item_table(tables["items"]), "Item level"))
    for line in formatting.notes(res):
        console.print(f"note: {line}", highlight=False)
    if out is not None:
        extra = {"Item level": formatting.item_table(tables["items"])} if "items" in tables else None
        formatting.write_output(res, out, extra)
        console.print(f"wrote {out}")


@app.command("significance-summary")
@run_user_errors
def significance_summary_cmd(
    summary: Path = typer.Argument(..., help="CSV: comparison, metric, mean_a, sd_a, mean_b, sd_b, n, reported_p (optional, e.g. '< 0.001')."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.csv, FILE.md or FILE.tex."),
) -> None:
    """Paired p from mean +- sd and n: its range over the unknown correlation r, and the r a reported p implies."""
    from matprobe.stats import formatting
    from matprobe.stats.summary import read_summary, summary_table

    table = summary_table(read_summary(summary), source=str(summary))
    shown = formatting.summary_display(table)
    console.print(formatting.rich_table(formatting.summary_display(table, with_warning=False, grid=False),
                                        "Paired p from summary statistics (r: unknown correlation of the pairs)"))
    for rec in table.itertuples():
        if rec.warning:
            console.print(f"note: {rec.comparison}, {rec.metric}: {rec.warning}", highlight=False)
    if out is not None:
        formatting.write_frame(table, shown, out, "Paired p from summary statistics")
        console.print(f"wrote {out}")
# </significance-commands>

# ---------------------------------------------------------------- sweep / compare
# <sweep-commands>
@app.command("sweep")
@run_user_errors
def sweep_command(
    stores: list[Path] = typer.Argument(..., help="One HDF5 store per checkpoint."),
    out: Path = typer.Option(..., "--out", help="Results table: FILE.csv, FILE.json or FILE.parquet (resumed if it exists)."),
    factors: str = typer.Option("M,A,T", "--factors", help="Chain order, comma-separated label columns."),
    layers: str = typer.Option("all", "--layers", help="'all' or stored layers, e.g. 8,16,-1 (negative: from the last block)."),
    pools: str = typer.Option("all", "--pools", help="'all' or pools, e.g. last,image."),
    estimator: str = typer.Option("probe", "--estimator", help="probe, mine, nwj, infonce, smile, ksg."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds per estimate (trained together for probe)."),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-fitting folds."),
    pca: Optional[int] = typer.Option(64, "--pca", help="PCA dims fitted on training folds (0 = none)."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Cells computed in parallel processes (one thread each)."),
    bits: bool = typer.Option(False, "--bits", help="Report bits instead of nats."),
    pointwise: bool = typer.Option(True, "--pointwise/--no-pointwise", help="Keep per-sample terms in OUT.pointwise/."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again instead of resuming."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the critics (cpu, cuda)."),
) -> None:
    """MI chain terms for every (checkpoint, layer, pool) cell in one resumable table; torchrun shards cells."""
    from matprobe.mi.sweep import run_sweep

    res = run_sweep(stores, out, factors=factors.split(","), layers=layers, pools=pools,
                    estimator=estimator, seeds=seeds, folds=folds, pca=pca or None, jobs=jobs,
                    unit="bits" if bits else "nats", pointwise=pointwise, overwrite=overwrite,
                    progress=True, device=device)
    if res.rank != 0:
        return
    console.print(f"{res.out}: {res.n_cells} cells x {len(factors.split(','))} terms "
                  f"({res.n_computed} computed here, {res.n_resumed} resumed) in {res.seconds:.1f} s"
                  + (f" over {res.world_size} ranks" if res.world_size > 1 else ""), highlight=False)
    piv = res.table.pivot_table(index=["checkpoint", "layer", "pool"], columns="term", values="estimate",
                                sort=False)
    console.print(piv.round(3).to_string(), highlight=False)


@app.command("compare")
@run_user_errors
def compare_command(
    store_a: Path = typer.Argument(..., help="Store A (e.g. the Related-trained checkpoint)."),
    store_b: Optional[Path] = typer.Argument(None, help="Store B; omit to compare two layers/pools of A."),
    term: str = typer.Option("T|M,A", "--term", help="Term as 'T|M,A' (target|conditioning set) or 'M'."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer of A (default: deepest stored)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool of A (default: last)."),
    layer_b: Optional[str] = typer.Option(None, "--layer-b", help="Layer of B (default: --layer)."),
    pool_b: Optional[str] = typer.Option(None, "--pool-b", help="Pool of B (default: --pool)."),
    estimator: str = typer.Option("probe", "--estimator", help="probe, mine, nwj, infonce, smile, ksg."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Seeds (the same on both sides)."),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-fitting folds (the same on both sides)."),
    pca: Optional[int] = typer.Option(64, "--pca", help="PCA dims fitted on training folds (0 = none)."),
    level: float = typer.Option(0.95, "--level", help="Interval level."),
    n_boot: int = typer.Option(2000, "--n-boot", help="Paired bootstrap resamples."),
    bits: bool = typer.Option(False, "--bits", help="Report bits instead of nats."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.json."),
) -> None:
    """ΔI = I_A - I_B of one term on the shared samples: paired bootstrap interval and p-value."""
    from matprobe.mi.compare import compare_stores, write_comparison

    comp = compare_stores(store_a, store_b, term, layer=layer, pool=pool, layer_b=layer_b, pool_b=pool_b,
                          estimator=estimator, seeds=seeds, folds=folds, pca=pca or None, ci_level=level,
                          n_boot=n_boot, unit="bits" if bits else "nats")
    d = comp.difference
    for tag, side in (("A", comp.side_a), ("B", comp.side_b)):
        console.print(f"{tag}: {side['store']} layer {side['layer']} pool {side['pool']}: {comp.term} = "
                      f"{side['estimate']:.4f} {d.unit} [{side['ci_low']:.4f}, {side['ci_high']:.4f}]",
                      highlight=False)
    console.print(f"ΔI = {d.delta:+.4f} {d.unit}, {level:.0%} interval [{d.ci_low:+.4f}, {d.ci_high:+.4f}], "
                  f"p = {d.p_value:.3g} (paired bootstrap over {d.n} shared samples, {comp.seeds} seeds, "
                  f"{comp.folds} folds)", highlight=False)
    if comp.note:
        console.print(f"note: {comp.note}", highlight=False)
    if out is not None:
        write_comparison(comp, out)
        console.print(f"wrote {out}")


@app.command("relate")
@run_user_errors
def relate_command(
    stores: list[Path] = typer.Argument(..., help="Stores with the model's answers, one per checkpoint."),
    target: str = typer.Option("label", "--target", help="Y: 'label', 'answer' or another label column."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer (default: deepest stored)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool (default: last)."),
    estimator: str = typer.Option("probe", "--estimator", help="probe, mine, nwj, infonce, smile, ksg."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Seeds per estimate."),
    pca: Optional[int] = typer.Option(64, "--pca", help="PCA dims fitted on training folds (0 = none)."),
    min_stratum: int = typer.Option(30, "--min-stratum", help="Strata with fewer answered rows are left out."),
    level: float = typer.Option(0.95, "--level", help="Interval level."),
    bits: bool = typer.Option(False, "--bits", help="Report bits instead of nats."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.json (all) or FILE.csv (points)."),
) -> None:
    """MI I(Z;Y|M,A,T) vs stored accuracy per stratum across checkpoints: Spearman with interval, Fano ceiling."""
    from matprobe.mi.behaviour import relate, write_relation

    rel = relate(stores, target=target, layer=layer, pool=pool, estimator=estimator, seeds=seeds,
                 pca=pca or None, level=level, min_stratum=min_stratum, unit="bits" if bits else "nats")
    shown = rel.points[["checkpoint", "modality", "anatomy", "task", "n", "mi", "h", "accuracy",
                        "fano_acc_max"]].round(3)
    console.print(shown.to_string(index=False), highlight=False)
    console.print(f"Spearman rho(MI, accuracy) = {rel.spearman:.3f}, {level:.0%} bootstrap interval "
                  f"[{rel.ci_low:.3f}, {rel.ci_high:.3f}], p = {rel.p_value:.3g}, {rel.n_points} points; "
                  f"MI in {rel.unit}; Fano ceiling for K = {rel.reference['classes']}", highlight=False)
    for note in rel.notes:
        console.print(f"note: {note}", highlight=False)
    if out is not None:
        write_relation(rel, out)
        console.print(f"wrote {out}")
# </sweep-commands>

# ---------------------------------------------------------------- report / demo / run
# <report-commands>
@app.command("demo")
@run_user_errors
def demo_command(
    out: Path = typer.Option(Path("reports/demo"), "--out", help="Run directory for data, models, results and the report."),
    quick: bool = typer.Option(False, "--quick", help="Smaller data, fewer steps and seeds (about a minute)."),
    workers: int = typer.Option(0, "--workers", help="Processes for fine-tuning (0 = up to 4, one per core)."),
) -> None:
    """The whole study on an embedded default: packaged medical images, tiny models, CPU only."""
    from matprobe.pipeline import demo_config, run_pipeline

    cfg = demo_config(quick=quick, out=str(out))
    cfg.workers = workers
    run = _run_with_status(run_pipeline, cfg)
    console.print(f"report: {run / 'report.md'} and {run / 'report.html'}")


@app.command("run")
@run_user_errors
def run_command(
    pipeline: Path = typer.Argument(..., help="Pipeline TOML (see experiments/demo/pipeline.toml)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Override [run] out."),
) -> None:
    """Run a pipeline file: data, checkpoints, extract, mi, check, significance, report."""
    from matprobe.pipeline import load_pipeline, run_pipeline

    cfg = load_pipeline(pipeline)
    if out is not None:
        cfg.out = str(out)
    run = _run_with_status(run_pipeline, cfg)
    console.print(f"report: {run / 'report.md'} and {run / 'report.html'}")


def _run_with_status(fn, cfg):
    import time

    t0 = time.perf_counter()
    with console.status("starting") as status:
        def say(msg: str) -> None:
            console.print(f"[dim]{time.perf_counter() - t0:6.1f} s[/] {msg}", highlight=False)
            status.update(msg)

        run = fn(cfg, progress=say)
    console.print(f"done in {time.perf_counter() - t0:.1f} s")
    return run


@app.command("report")
@run_user_errors
def report_command(
    run_dir: Path = typer.Argument(..., help="Run directory written by `matprobe run` or `matprobe demo`."),
) -> None:
    """Write report.md, a self-contained report.html and PNG figures for a run directory."""
    from matprobe.report.render import write_report

    paths = write_report(run_dir)
    console.print(f"wrote {paths['markdown']}, {paths['html']} and figures in {paths['figures']}")
# </report-commands>


if __name__ == "__main__":  # pragma: no cover
    app()
