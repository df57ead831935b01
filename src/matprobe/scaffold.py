"""`matprobe init`: a commented pipeline file for your own study, from your manifest and the
checkpoints (or stores) you already have.

Each checkpoint folder (a Hugging Face checkpoint with config.json, or a peft LoRA adapter
with adapter_config.json) or store file names its training condition and seed, e.g.
`related-s0`, `unrelated_seed2`, `ckpts/related/seed-1`, `related_seed1/checkpoint-500`,
`wo_task_seed42`; with
several held-out targets the path also names the target's triplet (`mri-brain-exposure/related-s0`).
Where the path names none of them, the argument names it: `related-s0=saves/sft`. The file is written
once, read back with `load_pipeline` (so what `init` writes always runs), and every setting
in it is commented, with the shared defaults (`matprobe.defaults`) as values.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from matprobe.conditions import CONDITION_NAMES, named_condition
from matprobe.data.images import shown_path
from matprobe.defaults import DEFAULTS
from matprobe.errors import ExtractError, InitError, MatprobeError

# a seed: s3, seed_3, seed-3, run3 (not r3: LoRA folders say r16 for the rank)
_SEED = re.compile(r"(?:^|[^a-z0-9])(?:s|seed|run)[-_.]?(\d+)(?![0-9])")
# the conditions a pipeline compares, and that it takes no names of one's own (its `run` refuses them)
CONDITIONS_SAID = (f"CONDITION is one of: {', '.join(CONDITION_NAMES)}, the training conditions a pipeline "
                   "compares (it takes no names of your own; checkpoints that differ otherwise, e.g. training "
                   "steps or models, are compared with `matprobe sweep` or `matprobe compare` on their stores)")
NAMING = ("name each folder CONDITION-sSEED, e.g. related-s0, unrelated-s1, or name it on the command line: "
          f"related-s0=PATH; {CONDITIONS_SAID}")


def _header_source(entries: list[dict]) -> list[str]:
    """The pipeline file's opening lines on where its embeddings come from: extracted from the
    checkpoints, read from the stores given (extracted already), or both."""
    ckpts, stores = any("ckpt" in e for e in entries), any("store" in e for e in entries)
    if not ckpts:
        return ["# It reads each store's embeddings and answers, extracted already (the manifest's split",
                "# column set per condition and target),"]
    return ["# It extracts each checkpoint's embeddings and answers on the manifest (its split column set",
            "# per condition and target" + ("; the stores given are used as they are)," if stores else "),")]


def _slug(target) -> str:
    return "-".join(str(x) for x in target).replace(" ", "_").lower()


def _absolute(path) -> Path:
    """`path` made absolute with `..` folded, symlinks kept (Path.resolve would follow them)."""
    return Path(os.path.abspath(path))


def _bare_seed(text: str, cond: str) -> list[str]:
    """A number right after the condition's name: related-42, Unrelated_3 (read after `_`
    became `-`)."""
    name = r"-?".join(map(re.escape, cond.split("-")))
    return re.findall(r"(?<![a-z])" + name + r"[-.](\d+)(?![0-9])", text)


def named_path(arg) -> tuple[Path, Path]:
    """(the path its condition, seed and target are read from, the folder or store itself) of one
    `init` argument: PATH, or NAME=PATH where the folder's own path names none of them."""
    text = str(arg)
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        if name and path:
            return Path(name), Path(path)
    return Path(arg), Path(arg)


def parse_entry(path: Path, targets: list[tuple[str, str, str]], named: Path | None = None) -> dict:
    """{condition, seed, target} read from a checkpoint folder's or store's path, or from the NAME
    of `NAME=PATH` (`named` the PATH; the name alone is read, not the folder it is run from).

    The nearest of its last three names that names a condition (and then a seed) wins:
    `related-s0`, `ckpts/related/s2`, `saves/related/seed_1/checkpoint-500`
    (a trainer's checkpoint folder below the run's)."""
    # the path as the user wrote it: absolute but not resolved, so a study of symlinks to the
    # checkpoints is named by its links, not by where they point
    given = Path(path).parts if named is not None else _absolute(path).parts
    parts = [re.sub(r"\.h5$", "", re.sub(r"[_\s]+", "-", p.lower())) for p in given[-4:]]
    text = "/".join(parts)
    near = parts[-3:][::-1]  # the folder's own name first
    cond = next((c for c in map(named_condition, near) if c is not None), None)
    seeds = next((found for part in near if (found := _SEED.findall(part) or
                                             (_bare_seed(part, cond) if cond else []))), [])
    if cond is None or not seeds:
        what = "condition" if cond is None else "seed"
        if named is not None:
            raise InitError(f"{path}={named}: the name {str(path)!r} names no {what} (or several): NAME in "
                            f"NAME=PATH must be CONDITION-sSEED, e.g. related-s0={named}; {CONDITIONS_SAID}")
        raise InitError(f"{path}: its path names no {what} (or several); {NAMING}")
    if len(targets) == 1:
        target = targets[0]
    else:
        hits = [t for t in targets if _slug(t).replace("_", "-") in text]
        if len(hits) != 1:
            raise InitError(f"{path}: with several targets the path must name one of them: "
                            + ", ".join(_slug(t) for t in targets) + " (e.g. "
                            + f"{_slug(targets[0])}/related-s0)")
        target = hits[0]
    return {"condition": cond, "seed": int(seeds[-1]), "target": target}


def _store_or_path_entry(name, path: Path, trips, kind: str) -> dict:
    """`parse_entry`'s {condition, seed, target}; for a store, its own split says which target it
    holds out where its path names none of several (`run` names the first target's stores without
    it), and a store whose split holds out another triplet than its path names is refused: its
    accuracy would be reported as that target's held-out accuracy."""
    from matprobe.store_checks import held_out_problem, held_out_target, held_out_triplets

    named = path if name != path else None
    if kind != "store":
        return parse_entry(name, trips, named=named)
    splits = ...  # the store's split, read once for both checks, and only after its name is read
    try:
        entry = parse_entry(name, trips, named=named)
    except InitError:
        if len(trips) < 2:
            raise
        splits = held_out_triplets(path)
        found = held_out_target(path, trips, splits)
        if found is None:
            raise
        # the condition and seed still come from the path: only the target is read from the store
        entry = {**parse_entry(name, [found], named=named), "target": found}
    if problem := held_out_problem(path, entry["target"], splits):
        raise InitError(f"{path}: {problem}; name it for the target it holds out, or give the store of "
                        f"{','.join(entry['target'])}")
    return entry


def _is_store_file(path: Path) -> bool:
    """Whether a path given among the checkpoints is a store (an HDF5 file): `--store *.h5` leaves
    every file after the first among them, as the shell expands the glob."""
    from matprobe.store import is_hdf5_file

    return is_hdf5_file(path)  # a folder, or nothing there: False, a checkpoint argument checked as one


def _check_folder(path: Path) -> str:
    """'hf' or 'lora'; anything else is refused with what a checkpoint folder holds."""
    if not path.is_dir():
        raise InitError(f"{path}: no such checkpoint folder; pass the folder holding config.json "
                        "(or adapter_config.json for a LoRA adapter)")
    # an adapter folder may hold its base's config.json too (trainers copy it beside the adapter):
    # the adapter's own file says what it is
    if (path / "adapter_config.json").is_file():
        return "lora"
    if (path / "config.json").is_file():
        return "hf"
    raise InitError(f"{path}: neither config.json (a Hugging Face checkpoint) nor adapter_config.json "
                    "(a peft LoRA adapter); pass the folder `save_pretrained` wrote")


def _refuse_other_class(base_dir: Path, adapter_dir: Path | None) -> None:
    """`attach_adapter`'s class check, read from the two json files (`run` refuses the pair when it
    loads the base; `init` wrote its pipeline)."""
    import json

    from matprobe.extract.adapters import check_base_class

    if adapter_dir is None:
        return
    try:
        adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
        archs = json.loads((Path(base_dir) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return  # unreadable files: `run`'s checks name them
    check_base_class(adapter_config, list(archs), adapter_dir, base_dir)


def _checkpoint_settings(path: Path, base, vision_tower, template, layers) -> dict:
    """What a checkpoint's pipeline entry needs beyond its path. A format with its own loader
    (original LLaVA, told by its config) is checked as `run` will check it before loading, with
    the base, tower and template it takes, and its weights as `extract` reads them (the tower's
    names and shapes); a Hugging Face folder or peft adapter
    is checked by `run` (and here only when --template is given, which not every architecture
    takes). "images": (the most images one prompt takes, why), for checkpoints that take few."""
    from matprobe.extract.checkpoints import applies_to_a_base, claimed_format, loaded_as, resolve_adapter
    from matprobe.extract.preflight import check_checkpoint, images_limit

    on_base = applies_to_a_base(path)
    # --base is for the checkpoints that are runs on a base; a whole model in the same study ignores it
    run_base = base if on_base else None
    own = claimed_format(path)
    loader = own  # the architecture whose own loader reads it, where there is one
    if on_base and own is None:
        pair = resolve_adapter(path, None, run_base)  # a base recorded from another machine: --base, said here
        _refuse_other_class(*pair)
        try:  # an adapter on an original LLaVA base (a trainer's checkpoint-N of a run) is read by its loader
            loader = loaded_as(*pair)[0]
        except ExtractError:
            loader = None  # a base `run` will name the problem of, as for any adapter
        loader = loader if loader is not None and loader.own_loader else None
    out = {"note": f"{own.name} checkpoint" if own is not None else None}
    if on_base and base:
        out["base"] = str(_absolute(base))
    if vision_tower is not None and loader is not None and loader.takes_vision_tower:
        out["vision_tower"] = str(_absolute(vision_tower))
    if template is not None:
        out["template"] = str(_absolute(template)) if Path(template).is_file() else template
    if loader is not None or template is not None:
        # an original LLaVA run's missing base and tower said together (check_checkpoint)
        check_checkpoint(path, None, run_base, layers=layers, vision_tower=out.get("vision_tower"),
                         template=out.get("template"))
    if own is None and (path / "config.json").is_file() and not on_base:
        from matprobe.extract.checkpoints import processor_files_problem
        from matprobe.extract.preflight import is_weights_file, no_weights_message

        # a study's folder without processor files passed `init` and was refused by `run`
        if problem := processor_files_problem(path):
            raise InitError(problem)
        if not any(is_weights_file(f) for f in path.iterdir()):  # a ZeRO checkpoint-N: refused after 3 stores
            raise InitError(no_weights_message(path, "checkpoint"))
    if own is not None:
        own.check_weights(path, out.get("vision_tower"))  # the tower `extract` would refuse, refused here
    out["images"] = images_limit(path, None, run_base, out.get("template"))  # None where the folder does not say
    return out


def _targets(dataset, targets) -> list[tuple[str, str, str]]:
    from matprobe.data.model import FACTORS, canonical_label
    from matprobe.data.splits import find_triplet

    present = {tuple(t) for t in dataset.frame()[list(FACTORS)].drop_duplicates().itertuples(index=False)}
    out = []
    for t in targets:
        parts = [p.strip() for p in t.split(",")] if isinstance(t, str) else list(t)
        if len(parts) != 3:
            raise InitError(f"--target {t!r}: write it as 'Modality,Anatomy,Task'")
        trip = tuple(canonical_label(f, p) for f, p in zip(FACTORS, parts))
        trip = find_triplet(present, trip) or trip  # the data's own spelling, whatever the case
        if trip not in present:
            from matprobe.data.medmat import group_level_hint

            raise InitError(f"--target {','.join(parts)}: no such (modality, anatomy, task) triplet in the "
                            "data; triplets present: " + "; ".join(",".join(p) for p in sorted(present))
                            + group_level_hint(dataset.source, trip))
        out.append(trip)
    if not out:
        raise InitError("no --target given; name the held-out triplet, e.g. --target 'MRI,Brain,Exposure'")
    return out


def _rendering_lines(dataset, entries) -> list[str]:
    """`rendering = "grid"` where a checkpoint takes fewer images per prompt than the default
    rendering shows a segmentation item (original LLaVA: one), with why; none otherwise."""
    from matprobe.extract.preflight import rendering_problem

    for e in entries:
        if e.get("images") and rendering_problem(dataset, "multi-image", e["images"]):
            n_seg = sum(s.is_segmentation for s in dataset)
            return [f'rendering = "grid"  # the {n_seg} segmentation items (options are masks) as one 2x2 composite '
                    f'each, as {e["images"][1]}']
    return []


def _q(value) -> str:
    """A TOML value (JSON strings, numbers and lists are valid TOML)."""
    return json.dumps(value)


def _check_training_data(dataset, trips, conditions, entries) -> None:
    """Each (target, condition) of the checkpoints has training triplets in the manifest, as
    `run` needs (its training split per condition): refused here, before a file is written
    that `run` would refuse."""
    from matprobe.data.splits import first_unsplittable

    # the targets are in the data (`_targets`): what is left is a condition without training triplets
    unsplittable = first_unsplittable(dataset, trips, conditions)
    if unsplittable:
        target, cond, _ = unsplittable
        # paths, not folder names: trainers name every run's folder checkpoint-N
        names = [shown_path(e.get("ckpt") or e.get("store")) for e in entries
                 if e["condition"] == cond and e["target"] == target]
        raise InitError(f"--target {','.join(target)}: no triplet of {dataset.source} is {cond} to it, "
                        f"so the {cond} checkpoint(s) {', '.join(names)} have no training data in the "
                        "manifest (`run` needs each condition's training split); choose another "
                        "--target, or leave those checkpoints out")


def _factors_the_folds_allow(dataset, factors: list[str], folds: int) -> tuple[list[str], list[str]]:
    """The factors `run` can estimate at `folds` folds, and a comment line for each left out.

    `run` merges each factor's classes with fewer than 2 rows per fold (`merge_rare_classes`) and
    refuses a factor the merge leaves one class, or whose merged class is still that small
    (`pipeline._rare_class_note`). Here the first is left out of the file's factors, as a factor of
    one class in the data is (its terms are 0 by definition), and the second is refused with
    init's own fix, so that init never writes a file `run` refuses."""
    import numpy as np

    from matprobe.data.model import resolve_factor
    from matprobe.mi.chain import merge_rare_classes

    codes = {f: dataset.codes(f) for f in factors}
    labels = {f: dataset.vocabularies[resolve_factor(f)].labels for f in factors}
    merged_codes, _, merged = merge_rare_classes(codes, list(factors), folds, labels)
    kept, lines = list(factors), []
    for f, m in merged.items():
        if np.unique(merged_codes[f]).size < 2:
            kept.remove(f)
            lines.append(f"# {f} left out of factors: every class has fewer than {m['need']} rows (2 per fold at "
                         f"folds = {folds}), merged they are one class and its terms are 0 by definition")
        elif m["rows"] < m["need"]:
            raise InitError(f"--folds {folds}: the rare classes of {f!r} in {dataset.source} merged hold {m['rows']} "
                            f"rows, still fewer than {m['need']} (2 per fold), so `run` could not estimate its "
                            "terms; add samples, or pass a lower --folds")
    return kept, lines


def _stored_cells(stores) -> tuple[str, str]:
    """The layers and pools the stores hold, in their order ("1,3", "last,image")."""
    from matprobe.store import EmbeddingStore

    layers, pools = {}, {}
    for store in stores:
        with EmbeddingStore.open(store) as st:
            for layer, pool in st.feature_keys():
                layers.setdefault(str(layer), None)
                pools.setdefault(str(pool), None)
    return ",".join(layers), ",".join(pools)


def init_pipeline(data, checkpoints=(), *, targets, out="pipeline.toml", run_out: str | None = None,
                  stores=(), base: str | None = None, layers: str = "-1", pools: str = DEFAULTS.pool,
                  device: str = "cpu", dtype: str = "fp32", image_root: str | None = None,
                  seeds: int = DEFAULTS.seeds, folds: int = DEFAULTS.folds, overwrite: bool = False,
                  vision_tower: str | None = None, template: str | None = None,
                  columns: str | dict | None = None, task_level: str = "subset") -> Path:
    """Write a commented pipeline file for a study of your own checkpoints (or stores) and
    return its path; it is read back with `load_pipeline` before this returns.

    Checkpoints in a format with its own loader (original LLaVA), and every checkpoint when
    `template` is given, are checked as `extract` checks them before loading (folder, weights,
    base, tower, template); an adapter's base is resolved for every adapter. A Hugging Face folder
    is otherwise checked by `run`'s preflight, before anything is extracted."""
    from matprobe.data import load_dataset
    from matprobe.data.design import single_class_factors
    from matprobe.io import write_text_atomic
    from matprobe.pipeline import load_pipeline

    out = Path(out)
    if out.exists() and not overwrite:
        raise InitError(f"{out} exists; pass --overwrite to replace it, or another --out")
    if not checkpoints and not stores:
        raise InitError("give the checkpoint folders (or --store files) of your fine-tuned models; with none yet, a "
                        "pipeline file with a [train] table and your [data] file fine-tunes tiny random-initialised "
                        "models on your items to try the whole path (README: Your own study)")
    data = Path(data).resolve()
    from matprobe.data.columns import parse_column_map

    columns = parse_column_map(columns)  # {their column: expected}; written into [data] below
    from matprobe.data.medmat import task_level_for

    with task_level_for(data, task_level):  # Med-MAT files: Table 9's tasks, or the paper's coarse ones
        dataset = load_dataset(data, image_root=image_root, columns=columns or None)
        trips = _targets(dataset, targets)
    entries = []
    for arg, kind in [(p, "store" if _is_store_file(named_path(p)[1]) else "ckpt") for p in checkpoints] + \
            [(p, "store") for p in stores]:
        name, path = named_path(arg)
        if kind == "ckpt":
            fmt = _check_folder(path)
        elif not path.is_file():
            raise InitError(f"{path}: no such store; write it with `matprobe extract --out {path}`")
        else:
            fmt = "store"
        entries.append({**_store_or_path_entry(name, path, trips, kind), kind: str(_absolute(path)), "format": fmt})
    for e in entries:  # after every path is named: a misnamed folder is said before a checkpoint's problem
        if "ckpt" in e:
            e.update(_checkpoint_settings(Path(e["ckpt"]), base, vision_tower, template, layers))
    for flag, value, key in (("--vision-tower", vision_tower, "vision_tower"), ("--template", template, "template")):
        if value is not None and not any(key in e for e in entries):
            raise InitError(f"{flag} {value}: none of the checkpoints takes it (it is for checkpoints in the "
                            "original LLaVA format, and --template also for llava and llava_next ones); drop it")
    seen = {}
    for e in entries:
        key = (e["target"], e["condition"], e["seed"])
        if key in seen:
            raise InitError(f"{seen[key]} and {e.get('ckpt') or e.get('store')} are both "
                            f"{e['condition']} seed {e['seed']} for {','.join(e['target'])}; {NAMING}")
        seen[key] = e.get("ckpt") or e.get("store")
    conditions = [c for c in CONDITION_NAMES if any(e["condition"] == c for e in entries)]
    _check_training_data(dataset, trips, conditions, entries)
    if any("ckpt" in e for e in entries):
        from matprobe.data.images import missing_images_error

        # said here, where --image-root is at hand, not first by `run` (stores need no images)
        if (error := missing_images_error(dataset, str(data), "pass --image-root DIR")) is not None:
            raise InitError(error)
    entries.sort(key=lambda e: (trips.index(e["target"]), conditions.index(e["condition"]), e["seed"]))
    run_out = run_out or str(out.with_suffix("")) + "-run"
    # a factor with one class in the data (a study of one task) has every term 0 by definition,
    # and the MI step refuses it: left out, with a comment that says why
    single = single_class_factors(dataset, ["modality", "anatomy", "task", "label"])
    factors = [f for f in ("modality", "anatomy", "task", "label") if f not in single]
    factors, rare_lines = _factors_the_folds_allow(dataset, factors, folds)

    lines = [
        "# matprobe pipeline for your own study, written by `matprobe init`; run it with",
        f"#   matprobe run {out.name}",
        *_header_source(entries),
        "# estimates the MI chain, checks Fano and PAC, compares the conditions and writes the report.",
        "# Every value below can be edited.",
        "",
        "[run]",
        f"out = {_q(str(run_out))}  # run directory (from where you run it): stores, MI, results.csv, report.html",
        "# workers = 0  # CPU processes for extraction and MI (0 = up to 4)",
        "",
        "[data]",
    ]
    # a Med-MAT file's image root is not where relative paths resolve: it replaces their med-mat/
    # prefix, so "relative image paths resolve here" would send a user editing the file one folder
    # too high (the mistake a Med-MAT study made on the command line)
    from matprobe.data.loaders import detect_format

    medmat = detect_format(data) == "medmat"
    lines.append(f"file = {_q(str(data))}  # " + ("your Med-MAT files (a JSON/JSONL file, or a folder of them)" if medmat
                                                else "your MAT manifest (JSONL, CSV, TSV, Parquet or a save_to_disk folder)"))
    root_says = ("replaces the records' med-mat/ prefix: the med-mat folder itself" if medmat
                 else "relative image paths resolve here")
    if image_root:
        lines.append(f"image_root = {_q(str(Path(image_root).resolve()))}  # {root_says}")
    else:
        lines.append(f"# image_root = \"/data/images\"  # {root_says}")
    if task_level != "subset":
        lines.append(f"task_level = {_q(task_level)}  # Med-MAT's coarse tasks (its Tables 3-7), as --task-level")
    if columns:  # a TOML inline table; quoted keys, as column names may hold spaces
        lines.append("columns = {" + ", ".join(f"{_q(k)} = {_q(v)}" for k, v in columns.items())
                     + "}  # your column names read as the expected ones")
    lines += [
        "",
        "[design]",
        f"target = {_q(list(trips[0]))}  # the held-out (modality, anatomy, task) triplet",
    ]
    if len(trips) > 1:
        lines.append(f"extra_targets = {_q([list(t) for t in trips[1:]])}  # further held-out triplets")
    extract_lines = [
        f"layers = {_q(layers)}  # decoder blocks from 0, negatives from the end, final, embed: e.g. \"8,16,-1\"",
        f"pools = {_q(pools)}  # last, image, question, mean (comma-separated)"]
    if not any("ckpt" in e for e in entries):
        # stores only: `run` estimates every (layer, pool) they hold, so the file says those (two
        # studies read layers "-1", pools "last" here beside a report of every stored cell)
        stored_layers, stored_pools = _stored_cells([e["store"] for e in entries])
        extract_lines = [
            "# the layers and pools your stores hold: `run` estimates the MI of every one and extracts nothing",
            f"layers = {_q(stored_layers)}",
            f"pools = {_q(stored_pools)}"]
    lines += [
        f"conditions = {_q(conditions)}  # the training splits your checkpoints were fine-tuned on",
        "",
        "[extract]",
        *extract_lines,
        "batch_size = 8",
        f"dtype = {_q(dtype)}  # bf16 on a GPU",
        f"device = {_q(device)}  # cuda for a GPU",
        *_rendering_lines(dataset, entries),
        "",
        "[mi]",
        f"factors = {_q(factors)}  # the chain's order; label = the answer's class",
    ]
    lines += [f"# {name} left out of factors: one class in the data ({label!r}), its terms are 0 by definition"
              for name, label in single.items()]
    lines += rare_lines
    lines += [
        f"estimator = {_q(DEFAULTS.estimator)}",
        f"seeds = {int(seeds)}  # per estimate (default {DEFAULTS.seeds})",
        f"folds = {int(folds)}  # cross-fitting folds (default {DEFAULTS.folds})",
        f"pca = {DEFAULTS.pca or 0}  # components, label-free: fitted once on all rows (0 = none)",
        f"level = {DEFAULTS.level}  # of every interval",
        "rare_classes = \"merge\"  # classes with < 2 rows per fold: merged into one per factor (terms flagged), or \"refuse\"",
        "",
        "[check]",
        f"delta = {DEFAULTS.delta}  # failure probability of the PAC bounds",
        "",
        "# One entry per model: its training condition, seed and held-out target, and either",
        "# ckpt (a Hugging Face checkpoint folder or a LoRA adapter folder, with base = its base",
        "# model when the adapter's own record of it is wrong) or store (a store you extracted).",
    ]
    for e in entries:
        name = ("" if len(trips) == 1 else _slug(e["target"]) + "-") + f"{e['condition']}-s{e['seed']}"
        lines += ["", "[[checkpoints]]", f"name = {_q(name)}", f"condition = {_q(e['condition'])}",
                  f"seed = {e['seed']}", f"target = {_q(list(e['target']))}"]
        if "store" in e:
            lines.append(f"store = {_q(e['store'])}  # extracted already: used as it is")
        else:
            note = e["note"] or {"hf": "Hugging Face checkpoint", "lora": "LoRA adapter"}[e["format"]]
            lines.append(f"ckpt = {_q(e['ckpt'])}  # {note}")
            if "base" in e:
                lines.append(f"base = {_q(e['base'])}  # the base model it was trained on")
            if "vision_tower" in e:
                lines.append(f"vision_tower = {_q(e['vision_tower'])}  # local folder of the CLIP tower its config names")
            if "template" in e:
                lines.append(f"template = {_q(e['template'])}  # the prompt's conversation template")
    write_text_atomic(out, "\n".join(lines) + "\n")
    try:
        load_pipeline(out)  # what init writes runs: a file the loader refuses is not left behind
    except MatprobeError:
        out.unlink()
        raise
    return out
