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

from matprobe.defaults import DEFAULTS
from matprobe.errors import MatprobeError
from matprobe.present import FORMAT_HELP, StdoutConsole


# Options that several commands share, declared once (issue 24): the same flag, default and
# help text everywhere; a command passes its own help where its meaning is narrower.
def format_option():
    return typer.Option("table", "--format", help=FORMAT_HELP)


def level_option(help: str = "Interval level."):
    return typer.Option(DEFAULTS.level, "--level", help=help)


def unit_option(help: str = "nats or bits."):
    return typer.Option(DEFAULTS.unit, "--unit", help=help)


def estimator_option(several: bool = False):
    from matprobe.mi.registry import estimator_help

    return typer.Option(DEFAULTS.estimator, "--estimator", help=estimator_help(several))


# one help text for every command's --pca
PCA_HELP = ("PCA dims (label-free: fitted once on all rows, shared by every term and fold; 0 = none). What it "
            "drops is tested before fitting: where labels were dropped it is raised 4x (256, 1024, or every "
            "coordinate), keeping 4 rows per input; a term still flagged pca-dropped-signal gets a widened or "
            "one-sided interval.")

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

console = StdoutConsole()  # full width when stdout is not a terminal (matprobe.present)
err_console = Console(stderr=True)


def fail(exc: Exception) -> None:
    """Print one clear error line and exit non-zero (no traceback for user errors)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


_STATE = {"debug": False}


def _refuse_in_place(out, *inputs) -> None:
    """Refuse an output that is one of the inputs (`data split F --out F`) or in an unwritable folder."""
    from matprobe.locks import check_not_input, check_output_location

    check_not_input(out, *inputs)
    check_output_location(out)  # an unwritable folder is refused before any work


def _refuse_out_kind(out, kinds: dict[str, str]) -> None:
    """An --out of a file type the command does not write (its writer's OUT_KINDS), refused before the
    estimates are made: a comparison's minutes were lost to `--out cmp.csv` at the end."""
    from matprobe.errors import MatprobeError
    from matprobe.io import check_out_suffix

    if out is not None:
        check_out_suffix(out, kinds, MatprobeError)


def _refuse_before_loading(stores=(), *, level: float | None = None, factors: list[str] | None = None,
                           pca: int | None = None, rare_classes: str | None = None) -> None:
    """The mistakes the arguments alone show (a missing store, --level 95, M twice, --pca -5),
    refused before torch is imported: the library would refuse them too, seconds later."""
    from matprobe.checks import check_factors, check_level, check_pca, check_rare_classes, check_store_path

    for store in stores:
        if store is not None:
            check_store_path(store)
    if level is not None:
        check_level(level)  # as --level: the library functions name their parameter, ci_level
    if factors is not None:
        check_factors(factors)
    check_pca(pca)
    if rare_classes is not None:
        check_rare_classes(rare_classes)


def run_user_errors(fn):
    """The one error path: any failure becomes one `error:` line and exit 2 (`--debug`: traceback).

    MatprobeError (bad input) prints its own message; OS, HDF5, decoding and memory errors are
    described by `matprobe.failures.user_message` (file, cause, fix).
    """
    import functools

    import click

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: what is kept and how to resume, one line
            if _STATE["debug"]:
                raise
            from matprobe.interrupts import exit_code, interrupt_message

            err_console.print(interrupt_message(fn.__name__, _with_run_dir(fn.__name__, kwargs), exc),
                              highlight=False, soft_wrap=True, markup=False)
            raise typer.Exit(code=exit_code(exc)) from None
        except typer.BadParameter as exc:  # typer's own (vendored) click: a bad option, not a bug
            fail(exc.message)
        except Exception as exc:
            if _STATE["debug"]:
                # the whole traceback, and the exit code the error has without --debug (a study read 1)
                import traceback

                traceback.print_exc()
                raise typer.Exit(code=2) from None
            from matprobe.failures import user_message

            fail(user_message(exc))

    return wrapper


def _with_run_dir(command: str, kwargs: dict) -> dict:
    """For `run`: the run directory its pipeline file names, as `out` (for the interrupt message)."""
    if command != "run_command" or kwargs.get("out") is not None or kwargs.get("pipeline") is None:
        return kwargs
    try:
        from matprobe.pipeline import load_pipeline

        return {**kwargs, "out": load_pipeline(kwargs["pipeline"]).out}
    except Exception:  # the file was read once already; this is only for the message
        return kwargs


def _unit(unit: str, bits: bool = False) -> str:
    """--unit nats|bits, with --bits as its shorthand."""
    from matprobe.units import BITS, check_unit

    return BITS if bits else check_unit(unit)


def _format(fmt: str) -> str:
    from matprobe.present import check_format

    return check_format(fmt)


def _refuse_old_bits(ctx: typer.Context) -> None:
    """`--bits N` (bits per parameter) was renamed; --bits is the unit switch everywhere now."""
    for arg in ctx.args:
        try:
            value = float(arg)
        except ValueError:
            raise MatprobeError(f"unexpected argument {arg!r}; see --help for the options") from None
        raise MatprobeError(f"--bits {arg}: --bits now switches the unit to bits (as in `mi`); "
                            f"for bits per parameter write --bits-per-param {value:g}")


def _show(tables, fmt: str, lines=()) -> None:
    from matprobe.present import show

    show(tables, fmt, console, lines=[str(x) for x in lines])


@app.callback()
def main_callback(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=lambda value: _print_version(value)),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output (results and errors only)."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error instead of one line."),
) -> None:
    from matprobe.failures import ignore_file_size_signal

    _STATE["debug"] = debug
    ignore_file_size_signal()  # a full file-size limit becomes an error line, not a kill
    from matprobe.interrupts import install_handlers

    install_handlers()  # SIGTERM stops like Ctrl-C: files closed, one line on what is kept
    if quiet:  # here and in every process the command starts (portable numerics, sweep workers)
        import os

        from matprobe.progress import QUIET_ENV, is_quiet, set_quiet

        before = (is_quiet(), os.environ.get(QUIET_ENV))
        set_quiet(True)
        os.environ[QUIET_ENV] = "1"

        def restore() -> None:  # a command run in-process (CliRunner, a notebook) leaves no trace
            set_quiet(before[0])
            if before[1] is None:
                os.environ.pop(QUIET_ENV, None)
            else:
                os.environ[QUIET_ENV] = before[1]

        ctx.call_on_close(restore)


def _print_version(value: bool) -> None:
    # an eager callback: runs before click asks for a command
    if value:
        from matprobe import __version__

        console.print(f"matprobe {__version__}")
        raise typer.Exit()


# ---------------------------------------------------------------- data (foundation)
# <data-commands>
TASK_LEVEL_HELP = ("Med-MAT files only: subset = Table 9's task, one per subset (default); group = the paper's coarse "
                   "tasks (Tables 3-7: COVID, Cancer, State, ...), by which Med-MAT draws its Related and Unrelated.")


@data_app.command("validate")
@run_user_errors
def data_validate(
    file: Path = typer.Argument(..., help="Med-MAT JSON/JSONL (a file, or a folder of them) or MAT manifest (JSONL/CSV/TSV/Parquet, or a Hugging Face save_to_disk folder)."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder that replaces the 'med-mat/' prefix (Med-MAT) or anchors relative image paths."),
    images: bool = typer.Option(True, "--images/--no-images", help="Open every image to check it is readable."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Map your column names, e.g. 'img_file=image,organ=anatomy' (common aliases such as choices, image_path, body_part are read without it)."),
    task_level: str = typer.Option("subset", "--task-level", help=TASK_LEVEL_HELP),
) -> None:
    """Count samples per (M, A, T) triplet and list every problem found."""
    from matprobe.data import validate_dataset
    from matprobe.data.medmat import task_level_for
    from matprobe.present.views import validation_table

    with task_level_for(file, task_level):
        report = validate_dataset(file, image_root=image_root, check_images=images, columns=columns)
    if len(report.triplet_counts):  # no empty table above a column problem
        _show(validation_table(report, file), "table")
    for note in report.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    for warning in report.warnings:  # the data loads, but a term or stratum says nothing (data/design.py)
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    for problem in report.problems:
        err_console.print(f"[red]problem:[/] {problem}", highlight=False, soft_wrap=True)
    if report.problems:
        err_console.print(f"{len(report.problems)} problem(s) found")
        raise typer.Exit(code=1)
    console.print("no problems found")


@data_app.command("split")
@run_user_errors
def data_split(
    file: Path = typer.Argument(..., help="Dataset file (Med-MAT file or folder of files, or MAT manifest: JSONL/CSV/TSV/Parquet/save_to_disk folder)."),
    target: str = typer.Option(..., "--target", help="Held-out triplet 'Modality,Anatomy,Task', e.g. 'CT,Lung,Classification'."),
    config: str = typer.Option("related", "--config", help="related | unrelated | zero-overlap | any-overlap | leave-one-out | without-modality | without-anatomy | without-task (CrossMed's ablations: the Related triplets lacking that component). unrelated keeps triplets sharing at most one of M, A, T; Med-MAT's Unrelated (Baseline+) is zero-overlap: it drops every subset sharing any element with the target (Med-MAT §3.1.2); its All Related (Fig. 4) is any-overlap: every triplet sharing one or two."),
    out: Path = typer.Option(..., "--out", help="Output manifest (JSONL) with split = train/test."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Remap image paths (see data validate)."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Map your column names, e.g. 'img_file=image,organ=anatomy' (common aliases such as choices, image_path, body_part are read without it)."),
    task_level: str = typer.Option("subset", "--task-level", help=TASK_LEVEL_HELP),
) -> None:
    """Write the training split for a target triplet by MAT overlap (CrossMed §III, §V)."""
    _refuse_in_place(out, file)
    from matprobe.data.medmat import task_level_for
    from matprobe.data.splits import split_file

    notes: list[str] = []
    with task_level_for(file, task_level):
        split = split_file(file, target, config, out=out, image_root=image_root, columns=columns, notes=notes)
    counts = split.frame().groupby(["split", "modality", "anatomy", "task"]).size()
    console.print(counts.to_string())
    for note in notes:
        console.print(f"note: {note}")
    console.print(f"wrote {len(split)} samples to {out}")
# </data-commands>

# ---------------------------------------------------------------- store (foundation)
# <store-commands>
@store_app.command("info")
@run_user_errors
def store_info(
    file: Path = typer.Argument(..., help="HDF5 store written by `matprobe extract`."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (the whole info document)."),
    fmt: str = format_option(),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also list every provenance field."),
) -> None:
    """Samples, feature arrays, answers and provenance of a store."""
    import json

    from matprobe.present.views import store_info_tables
    from matprobe.store import EmbeddingStore

    fmt = _format(fmt)
    with EmbeddingStore.open(file) as store:
        info = store.info()
    if as_json:
        console.file.write(json.dumps(info, default=str, indent=2) + "\n")
        return
    tables = store_info_tables(info, verbose=verbose)
    if fmt == "table" and verbose and not console.is_terminal:
        # off a terminal a table pads every row to its longest value (a provenance field holds
        # thousands of characters): the fields one per line instead, whole
        lines = [f"provenance {k}: {v}" for k, v in sorted(info["provenance"].items())]
        _show([t for t in tables if t.name != "provenance"], fmt, lines)
        return
    _show(tables, fmt)
# </store-commands>

# ---------------------------------------------------------------- extract
# <extract-commands>
@app.command("extract")
@run_user_errors
def extract_command(
    ckpt: Optional[Path] = typer.Option(None, "--ckpt", help="Local HF checkpoint folder (llava, qwen2_vl, qwen2_5_vl, llava_next, gemma3, idefics3), a LoRA adapter folder, or an original haotian-liu/LLaVA checkpoint or run folder (full, LoRA or mm_projector.bin run with --base)."),
    data: Path = typer.Option(..., "--data", help="Med-MAT JSON/JSONL (a file, or a folder of them) or MAT manifest (JSONL/CSV/TSV/Parquet/save_to_disk folder)."),
    out: Path = typer.Option(..., "--out", help="HDF5 store to write (resumed if it exists)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="peft LoRA adapter folder applied to --ckpt."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base checkpoint of the adapter (overrides the path stored in it); for an original LLaVA LoRA / projector run, the language model (LLaVA's --model-base)."),
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
    attn: str = typer.Option("sdpa", "--attn", help="Attention implementation: sdpa | eager | flash_attention_2 (recorded in the store)."),
    rendering: str = typer.Option("multi-image", "--rendering", help="Segmentation items (mask options): multi-image (question image + one overlay per candidate) | grid (one 2x2 composite)."),
    vision_tower: Optional[Path] = typer.Option(None, "--vision-tower", help="Original-format LLaVA: local folder of the CLIP tower its config names (mm_vision_tower: a hub id or another machine's path)."),
    template: Optional[str] = typer.Option(None, "--template", help="Prompt: chat (HF checkpoints' own, their default) | llava_v1 (original LLaVA-1.5's default) | vicuna_v1 | mistral_instruct (LLaVA-Med v1.5's default) | plain | a file with a {message} placeholder."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Map your column names, e.g. 'img_file=image,organ=anatomy' (common aliases such as choices, image_path, body_part are read without it)."),
) -> None:
    """Pooled hidden states (and the model's answers) of a VLM into an HDF5 store."""
    _refuse_in_place(out, data)
    from matprobe.extract.runner import ExtractConfig, extract

    result = extract(
        ExtractConfig(
            ckpt=str(ckpt) if ckpt else None, data=str(data), out=str(out), layers=layers,
            pools=pool, batch_size=batch_size, dtype=dtype, device=device,
            adapter=str(adapter) if adapter else None, base=str(base) if base else None,
            max_pixels=max_pixels, answers=answers, overwrite=overwrite,
            image_root=str(image_root) if image_root else None, merge_adapter=merge_adapter,
            attn_implementation=attn,
            rendering=rendering, columns=columns,
            vision_tower=str(vision_tower) if vision_tower else None, template=template,
        ),
        progress=True,
    )
    acc = "" if result.accuracy is None else f", accuracy {result.accuracy:.3f}"
    console.print(
        f"{result.out}: {result.n_resumed + result.n_computed} of {result.n_total} rows on this "
        f"process ({result.n_computed} computed, {result.n_resumed} resumed)"
        + (f" at {result.samples_per_s:.2f} samples/s" if result.n_computed else "")  # a resume computed nothing
        + f"; layers {','.join(result.layers)}; "
        f"pools {','.join(result.pools)}{acc}",
        highlight=False, soft_wrap=True,
    )
    for note in result.notes:
        err_console.print(f"[yellow]warning:[/] {data}: {note}", highlight=False, soft_wrap=True)
# </extract-commands>

# ---------------------------------------------------------------- mi
# <mi-commands>
def _portable(portable: bool, fn, *args, **kwargs):
    """fn(*args, **kwargs), under portable numerics when asked (`numerics.call_portable`)."""
    if not portable:
        return fn(*args, **kwargs)
    from matprobe.numerics import call_portable

    return call_portable(fn, *args, say=lambda line: err_console.print(line, highlight=False, soft_wrap=True),
                         **kwargs)


@app.command("mi")
@run_user_errors
def mi_command(
    store: Path = typer.Argument(..., help="HDF5 embedding store."),
    factors: str = typer.Option(",".join(DEFAULTS.factors), "--factors", help="Chain order, comma-separated label columns (M, A, T, Y = label, or any column)."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer as stored (e.g. 16, final) or counted from the end (-1); default: the last block stored."),
    pool: Optional[str] = typer.Option(None, "--pool", help=f"Pooling key as stored (default: {DEFAULTS.pool} when stored)."),
    estimator: str = estimator_option(several=True),
    seeds: int = typer.Option(DEFAULTS.seeds, "--seeds", min=1, help="Seeds per estimate."),
    folds: int = typer.Option(DEFAULTS.folds, "--folds", min=2, help="Cross-fitting folds."),
    pca: Optional[int] = typer.Option(DEFAULTS.pca, "--pca", help=PCA_HELP),
    level: float = level_option(),
    unit: str = unit_option(),
    bits: bool = typer.Option(False, "--bits", help="Same as --unit bits."),
    fmt: str = format_option(),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.json (results) or FILE.csv (table)."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the critics (cpu, cuda)."),
    pointwise: Optional[Path] = typer.Option(None, "--pointwise", help="Write the pointwise information per item to FILE.csv: one row per (item, term, estimator), the held-out critic's log q(y|z,c) - log p(y|c) averaged over seeds; a term's mean over its items is its estimate (before clipping), over a stratum's items that stratum's entry."),
    controls: bool = typer.Option(False, "--controls", help="Control task per chain term: labels drawn from the target's frequencies in each stratum, fixed per image, probed the same way; adds the selectivity (estimate minus control) with its paired interval (Hewitt & Liang 2019). One more estimate per term."),
    codelength: bool = typer.Option(False, "--codelength", help="Online (prequential) codelength of each chain term's target given Z, in bits, beside the uniform codelength and their ratio (Voita & Titov 2020): how easily a probe extracts the information; about two fold fits per term."),
    permutations: int = typer.Option(0, "--permutations", min=0, help="Permutation null per chain term: the target permuted within the conditioning strata this many times (same folds and preprocessing), giving a p-value and the excess over the null mean; costs this many times the terms (19 gives p down to 0.05; 0 = none)."),
    rare_classes: str = typer.Option("refuse", "--rare-classes", help="A factor's classes with fewer than 2 rows per fold: refuse (say which), or merge them into one class per factor (terms flagged merged-rare-classes; a merged target's term is at most the factor's own)."),
    portable_numerics: bool = typer.Option(False, "--portable-numerics", help="Compute as a pipeline with `[run] portable_numerics = true` does: in a fresh process with the kernels every x86-64 CPU has, one thread, so a portable run's MI files are reproduced to the bit (with its [mi] settings)."),
    groups: Optional[str] = typer.Option(None, "--groups", help="Sample column whose rows are one item (an image with several questions, a patient): each group's rows stay in one fold, the splits inside it and the bootstrap draw groups. Default: the image column (each image one item); without one, identical rows of Z are grouped unasked."),
) -> None:
    """Estimate the MI chain I(Z;M) + I(Z;A|M) + I(Z;T|M,A) and the direct I(Z;M,A,T)."""
    _refuse_in_place(out, store)
    names = [f.strip() for f in factors.split(",") if f.strip()]
    _refuse_before_loading([store], level=level, factors=names, pca=pca, rare_classes=rare_classes)
    from matprobe.mi.chain import check_out_path, run_store, write_results

    if out is not None:
        check_out_path(out)
    unit, fmt = _unit(unit, bits), _format(fmt)
    ests = [e.strip() for e in estimator.split(",") if e.strip()]
    result, meta = _portable(portable_numerics, run_store, store, names, layer, pool, estimators=ests, seeds=seeds,
                             folds=folds, pca=pca or None, unit=unit, device=device, ci_level=level, progress=True,
                             permutations=permutations, codelength=codelength, controls=controls,
                             pointwise=pointwise is not None, rare_classes=rare_classes,
                             **({} if groups is None else {"groups": groups}))
    lines = []
    if pointwise is not None:
        lines += result.write_pointwise_csv(pointwise)
    for term, agr in result.agreement().items():
        if len(ests) > 1:
            lines.append(f"{term}: estimators spread {agr['spread']:.3f} {unit}; intervals "
                         + ("overlap" if agr["intervals_overlap"] else "do not overlap"))
    if out is not None:
        write_results(result, out, store=meta["store"], fingerprint=meta["fingerprint"],
                      layer=meta["layer"], pool=meta["pool"], numerics=meta.get("numerics"))
        lines.append(f"wrote {out}")
    _show(result.to_table(), fmt, lines)
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
    unit: str = unit_option("nats or bits (inputs and outputs)."),
    bits: bool = typer.Option(False, "--bits", help="Same as --unit bits."),
    fmt: str = format_option(),
) -> None:
    """Fano's bounds side by side, the paper's form (CrossMed eq. 7-8) included."""
    from matprobe.theory.fano import fano_report

    res = fano_report(error, classes, entropy, marginal_entropy, mi, _unit(unit, bits))
    _show(res.to_table(), _format(fmt))


@bounds_app.command("pac", context_settings={"allow_extra_args": True})
@run_user_errors
def bounds_pac(
    ctx: typer.Context,
    emp_risk: float = typer.Option(..., "--emp-risk", help="Empirical (training) risk R̂ in [0, 1]."),
    n: int = typer.Option(..., "--n", help="Training samples n."),
    params: Optional[float] = typer.Option(None, "--params", help="Parameter count (7e9)."),
    bits_per_param: float = typer.Option(16.0, "--bits-per-param", help="Bits per parameter (ln|H| = params x bits x ln 2)."),
    ln_h: Optional[float] = typer.Option(None, "--ln-h", help="ln|H| in nats (instead of params×bits)."),
    kl: Optional[float] = typer.Option(None, "--kl", help="KL(Q||P) in nats for the PAC-Bayes bounds."),
    delta: float = typer.Option(DEFAULTS.delta, "--delta", help="Failure probability δ in (0, 1)."),
    test_errors: Optional[int] = typer.Option(None, "--test-errors", help="Held-out errors k."),
    test_n: Optional[int] = typer.Option(None, "--test-n", help="Held-out samples m."),
    bits: bool = typer.Option(False, "--bits", help="Show ln|H| and KL in bits (same as --unit bits)."),
    unit: str = unit_option("nats or bits for ln|H| and KL in the notes."),
    fmt: str = format_option(),
) -> None:
    """PAC bounds on the true risk side by side; vacuous ones (>= 1) are flagged."""
    from matprobe.theory.pac import pac_report

    _refuse_old_bits(ctx)
    unit, fmt = _unit(unit, bits), _format(fmt)
    res = pac_report(emp_risk, n, delta, params=params, bits_per_param=bits_per_param, ln_h=ln_h, kl_qp=kl,
                     test_errors=test_errors, test_n=test_n)
    _show(res.to_table(unit), fmt)


@app.command("check", context_settings={"allow_extra_args": True})
@run_user_errors
def check_cmd(
    ctx: typer.Context,
    store: Path = typer.Argument(..., help="HDF5 embedding store with the model's answers."),
    mi: Optional[Path] = typer.Option(None, "--mi", help="MI results JSON from `matprobe mi --out` (any --factors: the Y term is estimated here when missing)."),
    out: Path = typer.Option(Path("check.json"), "--out", help="Where to write the JSON."),
    target: Optional[str] = typer.Option(None, "--target", help="Y: answer (the correct option's index) or label (default: the MI results' target, else answer)."),
    estimate: bool = typer.Option(True, "--estimate/--no-estimate", help="Estimate I(Z;Y|M,A,T) when the MI results lack it (--no-estimate prints the `mi` command instead)."),
    delta: float = typer.Option(DEFAULTS.delta, "--delta", help="Failure probability δ in (0, 1)."),
    level: float = level_option("Level of the error intervals."),
    emp_risk: Optional[float] = typer.Option(None, "--emp-risk", help="Training risk, for PAC bounds."),
    n_train: Optional[int] = typer.Option(None, "--n-train", help="Training samples, for PAC bounds."),
    params: Optional[float] = typer.Option(None, "--params", help="Parameter count, for PAC bounds."),
    bits_per_param: float = typer.Option(16.0, "--bits-per-param", help="Bits per parameter, for PAC bounds (ln|H| = params x bits x ln 2)."),
    unit: str = unit_option("nats or bits (display; the JSON is in nats)."),
    bits: bool = typer.Option(False, "--bits", help="Same as --unit bits."),
    fmt: str = format_option(),
) -> None:
    """Fano and PAC theory held against the stored answers and MI estimates; says which Y it uses."""
    _refuse_in_place(out, store, mi)
    _refuse_before_loading([store], level=level)
    from matprobe.theory.check import OUT_KINDS, run_check, write_check

    _refuse_out_kind(out, OUT_KINDS)

    _refuse_old_bits(ctx)
    unit, fmt = _unit(unit, bits), _format(fmt)
    res = run_check(store, mi, delta=delta, level=level, target=target, emp_risk=emp_risk,
                    n_train=n_train, params=params, bits_per_param=bits_per_param,
                    estimate_missing=estimate, progress=True)
    write_check(res, out)
    _show(res.tables(unit), fmt, [f"wrote {out}"])


# </theory-commands>

# ---------------------------------------------------------------- significance
# <significance-commands>
@app.command("significance")
@run_user_errors
def significance_cmd(
    results: Path = typer.Argument(..., help="Tidy CSV: condition, target, seed, item (optional), metric, value."),
    spec: Optional[Path] = typer.Option(None, "--spec", help="Comparisons, one 'A vs B' per line (or JSON); default: Related against every other condition in the data, as `run` tests (CrossMed Table IX's rows first); without Related, the two conditions there. A comparison short of pairs is left out and said."),
    unit: str = typer.Option("auto", "--unit", help="Unit of analysis (not of information: MI in bits is --bits): target (seed means), seed (target x seed pairs), item, or auto (target with >= 2 targets, else seed)."),
    bits: bool = typer.Option(False, "--bits", help="MI metrics (named '... nats', as `run` writes them) in bits: their values divided by ln 2 before the tests, named '... bits' (p-values and effect sizes do not change)."),
    mixed: bool = typer.Option(False, "--mixed", help="Add a MixedLM fit: seed-level differences, random intercept per target."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="Metric(s) to test (repeatable); default: all."),
    items: bool = typer.Option(False, "--items", help="Item-level paired bootstrap (ratio metrics recomputed) and McNemar."),
    n_boot: int = typer.Option(DEFAULTS.n_boot, "--n-boot", help="Bootstrap resamples for --items."),
    family: str = typer.Option("all", "--family", help="Holm/BH family: all rows, or per metric."),
    alpha: float = typer.Option(0.05, "--alpha", help="Level for the 'exact test cannot reach it' warning."),
    level: float = level_option("Level of the intervals of the differences."),
    percent: bool = typer.Option(False, "--percent", help="Accuracy-like metrics are in percent (0-100) on purpose, as published tables are: test them in percentage points (otherwise refused)."),
    fmt: str = format_option(),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.csv (all numbers), FILE.md or FILE.tex."),
) -> None:
    """Paired tests between conditions, in CrossMed Table IX's layout (rows comparisons, columns metrics)."""
    _refuse_in_place(out, results, spec)
    from matprobe.present import significance as formatting
    from matprobe.stats.significance import significance

    res = significance(results, spec, unit=unit, mixed=mixed, metrics=metric, item_level=items,
                       n_resamples=n_boot, family=family, alpha=alpha, level=level, percent=percent, bits=bits)
    lines = [f"note: {line}" for line in res.notes()]
    if out is not None:  # what --format csv|markdown|latex prints, by the file's suffix
        formatting.write_output(res, out)
        lines.append(f"wrote {out}")
    _show(res.tables_for(_format(fmt)), _format(fmt), lines)


@app.command("significance-summary")
@run_user_errors
def significance_summary_cmd(
    summary: Path = typer.Argument(..., help="CSV: comparison, metric, mean_a, sd_a, mean_b, sd_b, n, reported_p (optional, e.g. '< 0.001'); each number is taken within half a unit of its last written decimal."),
    percent: bool = typer.Option(False, "--percent", help="Accuracy-like metrics are in percent (0-100) on purpose, as published tables are: their difference is in percentage points (otherwise refused)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.csv, FILE.md or FILE.tex."),
    fmt: str = format_option(),
) -> None:
    """Paired p from mean +- sd and n: its range over the unknown correlation r (and over the rounding of the numbers), and the r a reported p implies."""
    _refuse_in_place(out, summary)
    from matprobe.present import significance as formatting
    from matprobe.stats.summary import summarize

    fmt = _format(fmt)
    res = summarize(summary, percent=percent)
    lines = [f"note: {line}" for line in res.notes()]
    if out is not None:
        formatting.write_frame(res.results, formatting.summary_display(res.results), out, "Paired p from summary statistics")
        lines.append(f"wrote {out}")
    _show(res.tables_for(fmt), fmt, lines)
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
    estimator: str = estimator_option(),
    seeds: int = typer.Option(DEFAULTS.seeds, "--seeds", min=1, help="Seeds per estimate (trained together for probe)."),
    folds: int = typer.Option(DEFAULTS.folds, "--folds", min=2, help="Cross-fitting folds."),
    pca: Optional[int] = typer.Option(DEFAULTS.pca, "--pca", help=PCA_HELP),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Cells computed in parallel processes (one thread each)."),
    level: float = level_option(),
    unit: str = unit_option(),
    bits: bool = typer.Option(False, "--bits", help="Same as --unit bits."),
    fmt: str = format_option(),
    pointwise: bool = typer.Option(True, "--pointwise/--no-pointwise", help="Keep per-sample terms in OUT.pointwise/."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again instead of resuming."),
    device: str = typer.Option("cpu", "--device", help="Torch device for the critics (cpu, cuda)."),
    controls: bool = typer.Option(False, "--controls", help="Control task per term: selectivity columns (estimate minus the control's, with its interval)."),
    codelength: bool = typer.Option(False, "--codelength", help="Online codelength per term: online_bits, uniform_bits and compression columns."),
    permutations: int = typer.Option(0, "--permutations", min=0, help="Permutation null per term: p_perm and excess columns (costs this many times the cell)."),
    rare_classes: str = typer.Option("refuse", "--rare-classes", help="A factor's classes with fewer than 2 rows per fold: refuse (the cell fails, said), or merge them into one class per factor (terms flagged merged-rare-classes)."),
    portable_numerics: bool = typer.Option(False, "--portable-numerics", help="Compute in a fresh process with the kernels every x86-64 CPU has, one thread, as a pipeline with `[run] portable_numerics = true` does (its worker processes too)."),
) -> None:
    """MI chain terms for every (checkpoint, layer, pool) cell in one resumable table; torchrun shards cells."""
    _refuse_in_place(out, *stores)
    _refuse_before_loading(stores, level=level, factors=factors.split(","), pca=pca, rare_classes=rare_classes)
    from matprobe.mi.sweep import run_sweep
    from matprobe.present.views import sweep_table

    unit, fmt = _unit(unit, bits), _format(fmt)
    res = _portable(portable_numerics, run_sweep, stores, out, factors=factors.split(","), layers=layers, pools=pools,
                    estimator=estimator, seeds=seeds, folds=folds, pca=pca or None, jobs=jobs,
                    unit=unit, pointwise=pointwise, overwrite=overwrite, ci_level=level,
                    progress=True, device=device, controls=controls, codelength=codelength,
                    permutations=permutations, rare_classes=rare_classes)
    if res.rank != 0:
        return
    failed = res.failures()
    footer = [f"{res.out}: {res.n_cells} cells x {len(factors.split(','))} terms "
              f"({res.n_computed} computed here, {res.n_resumed} resumed) in {res.seconds:.1f} s"
              + (f" over {res.world_size} ranks" if res.world_size > 1 else "")]
    held = res.table.drop_duplicates(["store", "layer", "pool"]) if len(res.table) else res.table
    if len(held) > res.n_cells:  # the table keeps the cells of stores not given this time (a resume said only its own)
        footer[0] += (f"; the table holds {len(held)} cells, {len(held) - res.n_cells} of them of stores not given "
                      "this time")
    if len(failed):  # written with NaN estimates (empty columns above): say which and why
        first = failed.iloc[0]
        footer.append(f"warning: {len(failed)} of {res.n_cells} cells failed and hold no estimates (flag failed), "
                      f"e.g. {first.checkpoint} layer {first.layer} pool {first.pool}: {first.note}")
    _show(sweep_table(res, unit), fmt, footer)
    if res.n_cells and len(failed) >= res.n_cells:
        # the table is written (a rerun retries the cells), but nothing was estimated: a script must
        # not read exit 0 as a sweep done (`mi` exits 2 on the same cause)
        err_console.print(f"[bold red]error:[/] every one of the {res.n_cells} cells failed; {res.out} holds no "
                          "estimate (see the warning above for why)", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2)


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
    factors: Optional[str] = typer.Option(None, "--factors", help="The chain the term belongs to, as `mi --factors` (default: mi's, M,A,T, where the term is one of its terms; else the term's conditioning set, then its target): each side's estimate is then the one `mi` gives on that store with the same seeds, folds and PCA."),
    estimator: str = estimator_option(),
    seeds: int = typer.Option(DEFAULTS.seeds, "--seeds", min=1, help="Seeds (the same on both sides)."),
    folds: int = typer.Option(DEFAULTS.folds, "--folds", min=2, help="Cross-fitting folds (the same on both sides)."),
    pca: Optional[int] = typer.Option(DEFAULTS.pca, "--pca", help=PCA_HELP),
    level: float = level_option(),
    n_boot: int = typer.Option(DEFAULTS.n_boot, "--n-boot", help="Paired bootstrap resamples."),
    unit: str = unit_option(),
    bits: bool = typer.Option(False, "--bits", help="Same as --unit bits."),
    fmt: str = format_option(),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.json."),
    rare_classes: str = typer.Option("refuse", "--rare-classes", help="Classes with fewer than 2 rows per fold: refuse (say which), or merge them into one per factor on both sides (said in the note), as `mi` does."),
    groups: Optional[str] = typer.Option(None, "--groups", help="Sample column of A whose rows are one item (an image with several questions, a patient): each group's rows stay in one fold on both sides, and the paired bootstrap draws groups. Default, as `mi`: the image column (each image one item); without one, rows identical in A or in B are grouped unasked."),
) -> None:
    """ΔI = I_A - I_B of one term on the same samples (two stores of one dataset file): normal interval with a paired-bootstrap SE, and p-value.

    The term is estimated within its chain as `mi` estimates it, with the folds of `mi` on store A."""
    _refuse_in_place(out, store_a, store_b)
    _refuse_before_loading([store_a, store_b], level=level, factors=factors.split(",") if factors else None,
                           pca=pca, rare_classes=rare_classes)
    from matprobe.mi.compare import OUT_KINDS, compare_stores, write_comparison

    _refuse_out_kind(out, OUT_KINDS)
    from matprobe.present.views import comparison_table
    from matprobe.progress import track

    unit, fmt = _unit(unit, bits), _format(fmt)
    with track("compare", None) as bar:
        bar.update(description=f"{term} on both stores")
        comp = compare_stores(store_a, store_b, term, layer=layer, pool=pool, layer_b=layer_b, pool_b=pool_b,
                              factors=factors, estimator=estimator, seeds=seeds, folds=folds, pca=pca or None,
                              ci_level=level, n_boot=n_boot, unit=unit, rare_classes=rare_classes, groups=groups)
        bar.advance()
    lines = []
    if out is not None:
        write_comparison(comp, out)
        lines.append(f"wrote {out}")
    _show(comparison_table(comp), fmt, lines)


@app.command("relate")
@run_user_errors
def relate_command(
    stores: list[Path] = typer.Argument(..., help="Stores with the model's answers, one per checkpoint."),
    target: str = typer.Option("label", "--target", help="Y: 'label', 'answer' or another label column."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer (default: deepest stored)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool (default: last)."),
    estimator: str = estimator_option(),
    seeds: int = typer.Option(DEFAULTS.seeds, "--seeds", min=1, help="Seeds per estimate."),
    folds: int = typer.Option(DEFAULTS.folds, "--folds", min=2, help="Cross-fitting folds."),
    pca: Optional[int] = typer.Option(DEFAULTS.pca, "--pca", help=PCA_HELP),
    min_stratum: int = typer.Option(30, "--min-stratum", help="Strata with fewer answered rows are left out."),
    level: float = level_option(),
    unit: str = unit_option(),
    bits: bool = typer.Option(False, "--bits", help="Same as --unit bits."),
    fmt: str = format_option(),
    out: Optional[Path] = typer.Option(None, "--out", help="Write FILE.json (all) or FILE.csv (points, the columns of --format csv)."),
) -> None:
    """MI I(Z;Y|M,A,T) vs stored accuracy per stratum across checkpoints: Spearman with interval (its p
    permutes whole strata: points of one stratum are not independent), Fano ceiling."""
    _refuse_in_place(out, *stores)
    _refuse_before_loading(stores, level=level, pca=pca)
    from matprobe.present.views import relation_table
    from matprobe.progress import track
    from matprobe.theory.relate import OUT_KINDS, relate, write_relation

    _refuse_out_kind(out, OUT_KINDS)

    unit, fmt = _unit(unit, bits), _format(fmt)
    with track("relate", None) as bar:
        bar.update(description=f"I(Z;{target}|M,A,T) on {len(stores)} store(s)")
        rel = relate(stores, target=target, layer=layer, pool=pool, estimator=estimator, seeds=seeds, folds=folds,
                     pca=pca or None, level=level, min_stratum=min_stratum, unit=unit)
        bar.advance()
    lines = [f"note: {note}" for note in rel.notes]
    if out is not None:
        write_relation(rel, out)
        lines.append(f"wrote {out}")
    _show(relation_table(rel), fmt, lines)
# </sweep-commands>

# ---------------------------------------------------------------- report / demo / run
# <report-commands>
@app.command("demo")
@run_user_errors
def demo_command(
    out: Path = typer.Option(Path("reports/demo"), "--out", help="Run directory for data, models, results and the report."),
    quick: bool = typer.Option(False, "--quick", help="Smaller data, fewer steps and seeds, no online codelength (one to two minutes on 2 cores)."),
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
    out: Optional[Path] = typer.Option(None, "--out", help="Override \\[run] out."),
) -> None:
    """Run a pipeline file: data, checkpoints, extract, mi, check, significance, report.

    \b
    The file (TOML; `matprobe init` writes one for your checkpoints) holds:
      \\[run]         out (run directory), workers, portable_numerics
      \\[data]        file (your manifest) or demo = true; image_root,
                    columns, task_level
      \\[design]      target = [M, A, T] held out, extra_targets, conditions
      \\[\\[checkpoints]] per model: name, condition, seed, target, and ckpt
                    (HF folder or LoRA adapter; base) or store (extracted already)
      \\[train]       the demo's tiny fine-tuning, used when no \\[\\[checkpoints]]
      \\[extract]     layers, pools, batch_size, dtype, device, rendering,
                    max_pixels
      \\[mi]          factors, estimator, seeds, folds, pca, level, rare_classes,
                    controls, codelength, permutations
      \\[check]       delta

    A rerun into the same \\[run] out resumes: stores, MI and check files
    made from the same inputs and settings are reused (checked by content),
    the rest is computed; a store made from other inputs is refused, naming it.
    """
    from matprobe.pipeline import load_pipeline, run_pipeline

    cfg = load_pipeline(pipeline)
    if out is not None:
        cfg.out = str(out)
    run = _run_with_status(run_pipeline, cfg)
    console.print(f"report: {run / 'report.md'} and {run / 'report.html'}")


@app.command("init")
@run_user_errors
def init_command(
    checkpoints: Optional[list[Path]] = typer.Argument(None, help="Your fine-tuned checkpoint folders (config.json, or adapter_config.json for LoRA), each named by condition and seed, e.g. related-s0 (or given as NAME=PATH, e.g. related-s0=saves/sft)."),
    data: Path = typer.Option(..., "--data", help="Your MAT manifest (JSONL/CSV/TSV/Parquet/save_to_disk folder), or Med-MAT files (a file or a folder of them)."),
    target: list[str] = typer.Option(..., "--target", help="Held-out triplet 'Modality,Anatomy,Task' (repeat for several; the paths then name it)."),
    out: Path = typer.Option(Path("pipeline.toml"), "--out", help="Pipeline file to write."),
    run_out: Optional[str] = typer.Option(None, "--run-out", help="Run directory the pipeline writes (default: OUT without .toml, plus -run)."),
    store: Optional[list[Path]] = typer.Option(None, "--store", help="A store you extracted (named by condition and seed), instead of a checkpoint (repeatable)."),
    base: Optional[Path] = typer.Option(None, "--base", help="Base checkpoint of LoRA adapters and original-LLaVA LoRA / projector runs (default: the one each adapter records)."),
    vision_tower: Optional[Path] = typer.Option(None, "--vision-tower", help="Original-format LLaVA: local folder of the CLIP tower their configs name (written into each entry)."),
    template: Optional[str] = typer.Option(None, "--template", help="Prompt template for LLaVA checkpoints: llava_v1 | vicuna_v1 | mistral_instruct | plain | a file (default: each format's own)."),
    layers: str = typer.Option("-1", "--layers", help="Layers to extract, e.g. 8,16,-1."),
    pool: str = typer.Option(DEFAULTS.pool, "--pool", help="Pools to extract, e.g. last,image."),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda."),
    dtype: str = typer.Option("fp32", "--dtype", help="bf16 | fp16 | fp32."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder relative image paths resolve against."),
    seeds: int = typer.Option(DEFAULTS.seeds, "--seeds", min=1, help="MI seeds per estimate."),
    folds: int = typer.Option(DEFAULTS.folds, "--folds", min=2, help="MI cross-fitting folds."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Map your column names, e.g. 'organ_site=anatomy,pic=image' (written into the file's [data] columns)."),
    task_level: str = typer.Option("subset", "--task-level", help=TASK_LEVEL_HELP + " Written into the file's [data] task_level."),
) -> None:
    """Write a commented pipeline file for your own checkpoints; then `matprobe run FILE`."""
    from matprobe.scaffold import init_pipeline

    path = init_pipeline(data, checkpoints or (), targets=target, out=out, run_out=run_out, stores=store or (),
                         base=str(base) if base else None, layers=layers, pools=pool, device=device, dtype=dtype,
                         image_root=str(image_root) if image_root else None, seeds=seeds, folds=folds,
                         overwrite=overwrite, vision_tower=str(vision_tower) if vision_tower else None,
                         template=template, columns=columns, task_level=task_level)
    console.print(f"wrote {path}; run it with: matprobe run {path}", highlight=False, soft_wrap=True)


def _run_with_status(fn, cfg):
    import time

    from rich.markup import escape

    from matprobe.progress import is_quiet

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if not is_quiet():
            # progress and notes go to stderr (README, CLI reference), stdout keeps what the run wrote;
            # escaped: a message naming a pipeline key ("[mi] rare_classes") is not rich markup
            err_console.print(f"[dim]{time.perf_counter() - t0:6.1f} s[/] {escape(msg)}", highlight=False, soft_wrap=True)

    run = fn(cfg, progress=say, progress_bars=True)
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
