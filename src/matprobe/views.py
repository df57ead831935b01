"""Display tables (matprobe.present.Table) for results whose modules have no `.to_table()`
of their own: dataset validation, sweeps, paired comparisons, MI-vs-accuracy relations and
store summaries.

They read only the results' public attributes, so the modules that compute them stay
free of presentation code.
"""

from __future__ import annotations

from matprobe.present import Column, Table


def validation_table(report, source) -> Table:
    """`data validate`: samples per (M, A, T) triplet."""
    table = Table([Column("modality", "modality"), Column("anatomy", "anatomy"), Column("task", "task"),
                   Column("n", "n", "count", "samples of the triplet")],
                  title=f"{source} ({report.format}, {report.n_records} records)")
    for row in report.triplet_counts.itertuples(index=False):
        table.add_row(**dict(zip(("modality", "anatomy", "task", "n"), row)))
    return table


def sweep_table(res, unit: str = "") -> Table:
    """One row per (checkpoint, layer, pool), one column per term: estimates with intervals."""
    frame = res.table
    terms = list(dict.fromkeys(frame["term"]))
    unit = unit or (str(frame["unit"].iloc[0]) if "unit" in frame and len(frame) else "")
    level = frame["ci_level"].iloc[0] if "ci_level" in frame and len(frame) else None
    lvl = f"{level:.0%}" if level == level and level else "CI"
    cols = [Column("checkpoint", "checkpoint", description="store's checkpoint name"),
            Column("layer", "layer", description="layer key as stored"),
            Column("pool", "pool", description="pooling of the hidden states")]
    cols += [Column(t, f"{t} [{lvl}]", unit, f"estimate of {t} with its {lvl} interval", ".3f") for t in terms]
    table = Table(cols, title=f"sweep ({unit}): {res.out}")
    for key, grp in frame.groupby(["checkpoint", "layer", "pool"], sort=False):
        row = dict(zip(("checkpoint", "layer", "pool"), map(str, key)))
        for r in grp.itertuples():
            row[r.term] = (r.estimate, r.ci_low, r.ci_high)
        table.rows.append(row)
    return table


def comparison_table(comp) -> Table:
    """Both sides of a paired comparison and ΔI with its interval and p."""
    d = comp.difference
    lvl = f"{d.ci_level:.0%}"
    cols = [Column("side", "side", description="A, B, or the paired difference ΔI = I_A - I_B"),
            Column("store", "store"), Column("layer", "layer"), Column("pool", "pool"),
            Column("estimate", comp.term, d.unit, f"estimate of {comp.term}", "+.4f"),
            Column("interval", f"{lvl} interval", d.unit,
                   f"{lvl} interval; for A - B: {getattr(d, 'method', 'paired bootstrap')}", "+.4f"),
            Column("p", "p", "p", "two-sided p of ΔI = 0, inverting the A - B interval", ".3g")]
    table = Table(cols, title=f"ΔI of {comp.term} ({d.unit}), {d.n} shared samples, {comp.seeds} seeds, "
                              f"{comp.folds} folds, {comp.estimator}")
    for tag, side in (("A", comp.side_a), ("B", comp.side_b)):
        table.add_row(side=tag, store=side["store"], layer=side["layer"], pool=side["pool"],
                      estimate=side["estimate"], interval=(side["ci_low"], side["ci_high"]))
    # ΔI is estimated from per-sample terms on the shared rows (same folds and seeds), not as the
    # difference of the two estimates above, so its label says so and the footnote gives both
    table.add_row(side="paired ΔI", estimate=d.delta, interval=(d.ci_low, d.ci_high), p=d.p_value)
    shown = [float(f"{comp.side_a['estimate']:+.4f}"), float(f"{comp.side_b['estimate']:+.4f}")]
    plain = shown[0] - shown[1]
    note = (f"paired ΔI = mean over the {d.n} shared samples of A's minus B's per-sample term (same "
            "folds and seeds)")
    if f"{plain:+.4f}" != f"{d.delta:+.4f}":
        note += (f"; the two estimates above are each side's own estimate (not a per-sample mean) "
                 f"and differ by {plain:+.4f} {d.unit}")
    table.footnotes.append(note)
    table.footnotes.append(f"paired ΔI interval: {getattr(d, 'method', 'paired bootstrap')}")
    if comp.note:
        table.footnotes.append(comp.note)
    return table


def relation_table(rel) -> Table:
    """Per (checkpoint, stratum): n, MI with interval, entropy, accuracy with interval, Fano's ceiling."""
    lvl = f"{rel.ci_level:.0%}"
    cols = [Column("checkpoint", "checkpoint"), Column("modality", "M"), Column("anatomy", "A"),
            Column("task", "T"), Column("n", "n", "count", "answered rows in the stratum"),
            Column("mi", "Î [CI]", rel.unit, f"I(Z;Y|stratum) with its {lvl} interval", ".3f"),
            Column("h", "H(Y|s)", rel.unit, "plug-in entropy of Y in the stratum", ".3f"),
            Column("accuracy", "accuracy [CI]", "probability",
                   f"stored accuracy with its {lvl} Clopper-Pearson interval", ".3f"),
            Column("fano_acc_max", "Fano max acc.", "probability",
                   "largest accuracy Fano allows given Î", ".3f"),
            Column("sparse", "left out", description="stratum too small for the correlation")]
    table = Table(cols, title=f"MI ({rel.unit}) vs accuracy per stratum")
    for r in rel.points.itertuples():
        table.add_row(checkpoint=r.checkpoint, modality=r.modality, anatomy=r.anatomy, task=r.task, n=r.n,
                      mi=(r.mi, r.mi_ci_low, r.mi_ci_high), h=r.h,
                      accuracy=(r.accuracy, r.acc_ci_low, r.acc_ci_high), fano_acc_max=r.fano_acc_max,
                      sparse="yes" if r.sparse else "")
    table.footnotes.append(
        f"Spearman rho(MI, accuracy) = {rel.spearman:.3f}, {lvl} bootstrap interval [{rel.ci_low:.3f}, "
        f"{rel.ci_high:.3f}], p = {rel.p_value:.3g}, {rel.n_points} points; Fano ceiling for K = "
        f"{rel.reference['classes']}")
    return table


def store_info_tables(info: dict, verbose: bool = False) -> list[Table]:
    """`store info`: the feature arrays, answers per triplet, the label columns and (with
    `verbose`) every provenance field; without it, one line says how many there are."""
    acc = info.get("accuracy")
    feats = Table([Column("layer", "layer"), Column("pool", "pool"), Column("dim", "dim", "count")],
                  title=f"{info['path']}: {info['n_done']} / {info['n_samples']} samples done"
                        + (" (virtual merge)" if info.get("virtual") else "")
                        + f"; answers stored: {info['answers_stored']}"
                        + (f", accuracy {acc:.3f}" if acc is not None else "") + "; features (float32)")
    for f in info["features"]:
        feats.add_row(layer=str(f["layer"]), pool=f["pool"], dim=f["dim"])
    labels = Table([Column("column", "column"), Column("n", "n labels", "count"), Column("labels", "labels")],
                   title="label columns")
    for col, values in info["label_columns"].items():
        labels.add_row(column=col, n=len(values), labels=", ".join(map(str, values)))
    prov = Table([Column("key", "key"), Column("value", "value")], title="provenance")
    for k, v in sorted(info["provenance"].items()):
        prov.add_row(key=k, value=str(v))
    if not verbose:
        labels.footnotes.append(f"provenance: {len(info['provenance'])} fields (model, data, settings); "
                                "`store info --verbose` lists them, `--json` prints everything")
    tables = [feats]
    if info["answers_stored"] and info.get("by_triplet"):
        scores = Table([Column("modality", "modality"), Column("anatomy", "anatomy"), Column("task", "task"),
                        Column("n", "n", "count", "answered items"),
                        Column("accuracy", "accuracy", "fraction", "share of answered items chosen right", fmt=".3f"),
                        Column("n_seg", "seg. items", "count", "items whose options are masks"),
                        Column("ciou", "cIoU", "fraction", "Σ intersection / Σ union over segmentation items",
                               fmt=".3f")],
                       title="answers per (M, A, T): accuracy"
                             + ("; cIoU = Σ I / Σ U over segmentation items"
                                if any(r.get("n_segmentation") for r in info["by_triplet"]) else ""))
        for r in info["by_triplet"]:
            scores.add_row(modality=str(r.get("modality")), anatomy=str(r.get("anatomy")), task=str(r.get("task")),
                           n=r["answered"], accuracy=r["accuracy"], n_seg=r["n_segmentation"] or None,
                           ciou=r["cIoU"])
        tables.append(scores)
    return tables + [labels] + ([prov] if verbose else [])
