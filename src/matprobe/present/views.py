"""Display tables (matprobe.present.Table) for results whose modules have no `.to_table()`
of their own: dataset validation, sweeps, paired comparisons, MI-vs-accuracy relations and
store summaries.

They read only the results' public attributes, so the modules that compute them stay
free of presentation code.
"""

from __future__ import annotations

from matprobe.present import NOT_APPLICABLE, Column, Table, interval_cell, shown_difference

# Machine columns of MI intervals (CSV and JSON, `present`'s rule): the same names as the results files
MI_MACHINE = {
    "estimate": ("info", "point estimate"),
    "ci_low": ("info", "interval's lower end"),
    "ci_high": ("info", "interval's upper end (where bound is lower: the entropy cap's upper limit, no statement)"),
    "bound": ("", "two-sided, or lower: only ci_low is a statement (the estimator's shortfall is not bounded)"),
    "ci_level": ("", "level of the interval"),
    "unit": ("", "unit of the information-valued columns of the row (nats or bits)"),
    "h_upper": ("info", "entropy of the target given the conditioning set (largest possible value)"),
    "n": ("count", "rows the estimate is evaluated on"),
}


def machine_table(frame, unit: str, meta: dict | None = None, *, title: str = "", footnotes=(), name: str = "",
                  numeric=()) -> Table:
    """A tidy frame as the table CSV and JSON write (`Table.machine`): columns described by `meta`
    ({key: (unit, description)}, "info" standing for `unit`), an empty `bound` as None (no interval),
    and the `numeric` columns as numbers (a table read back from CSV may hold "" for NaN)."""
    import pandas as pd

    frame = frame.copy()
    for key in numeric:
        if key in frame:
            frame[key] = pd.to_numeric(frame[key], errors="coerce")
    if "bound" in frame:
        frame["bound"] = [b if isinstance(b, str) and b else None for b in frame["bound"]]
    meta = {**MI_MACHINE, **(meta or {})}
    cols = []
    for key in map(str, frame.columns):
        col_unit, description = meta.get(key, ("", ""))
        cols.append(Column(key, key, unit if col_unit == "info" else col_unit, description))
    return Table.from_frame(frame, title=title, columns=cols, footnotes=footnotes, name=name)


# beside every table that shows a one-sided interval (`present.OneSided`)
ONE_SIDED_FOOTNOTE = ("≥ x: a one-sided interval: the estimator's shortfall is not bounded there (see the note), "
                      "so only its lower end is a statement: the MI is at least x; the entropy cap H is its "
                      "only upper limit")


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
            row[r.term] = interval_cell((r.estimate, r.ci_low, r.ci_high), r.bound)
        table.rows.append(row)
    if (frame["bound"] == "lower").any():
        table.footnotes.append(ONE_SIDED_FOOTNOTE)
    # CSV and JSON: the sweep's own table, one row per (cell, term), as `--out x.csv` holds it
    table.machine = machine_table(frame, unit, {
        "checkpoint": ("", "store's checkpoint name"), "layer": ("", "layer key as stored"),
        "pool": ("", "pooling of the hidden states"), "term": ("", "MI term: I(Z;target|given)"),
        "selectivity": ("info", "estimate minus the control task's estimate"),
        "selectivity_low": ("info", "selectivity interval's lower end"),
        "selectivity_high": ("info", "selectivity interval's upper end"), "control": ("info", "control task's estimate"),
        "excess": ("info", "estimate minus the permutation null's mean"), "online_bits": ("bits", "online codelength"),
        "uniform_bits": ("bits", "uniform codelength")},
        title=table.title, footnotes=table.footnotes, name="cells",
        numeric=("estimate", "ci_low", "ci_high", "ci_level", "h_upper", "selectivity", "selectivity_low",
                 "selectivity_high", "control", "excess", "online_bits", "uniform_bits", "compression", "p_perm"))
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
                      estimate=side["estimate"], interval=interval_cell((side["ci_low"], side["ci_high"]),
                                                                        side.get("bound")))
    # ΔI is estimated from per-sample terms on the shared rows (same folds and seeds), not as the
    # difference of the two estimates above, so its label says so and the footnote gives both
    # no p where both sides sit at their entropy caps (`mi.compare.both_saturated`; the note says why)
    table.add_row(side="paired ΔI", estimate=d.delta, interval=(d.ci_low, d.ci_high),
                  p=NOT_APPLICABLE if d.p_value is None else d.p_value)
    plain = shown_difference(comp.side_a, comp.side_b)
    note = (f"paired ΔI = mean over the {d.n} shared samples of A's minus B's per-sample term (same "
            "folds and seeds)")
    if f"{plain:+.4f}" != f"{d.delta:+.4f}":
        note += (f"; the two estimates above are each side's own estimate (not a per-sample mean) "
                 f"and differ by {plain:+.4f} {d.unit}")
    table.footnotes.append(note)
    table.footnotes.append(f"paired ΔI interval: {getattr(d, 'method', 'paired bootstrap')}")
    slack = getattr(d, "slack", 0.0) or 0.0
    if slack > 0 and d.p_value is not None:
        # p inverts the widened interval, so a |ΔI| inside the slack reads p = 1 (a user took that
        # for a bug beside an interval that looked like p = 0.57)
        table.footnotes.append(f"p inverts that interval, widened by the extrapolation slack of ±{slack:.4f} "
                               f"{d.unit}: the part of |ΔI| beyond the slack is tested"
                               + (f"; here |ΔI| = {abs(d.delta):.4f} is within it, so p = 1"
                                  if abs(d.delta) <= slack else ""))
    if comp.note:
        table.footnotes.append(comp.note)
    if "lower" in (comp.side_a.get("bound"), comp.side_b.get("bound")):
        table.footnotes.append(ONE_SIDED_FOOTNOTE)
    table.name = "comparison"
    table.machine = comparison_machine(comp, table)
    return table


# the row of the paired difference in `comparison_machine` (its `side`)
DIFFERENCE_SIDE = "A - B"


def comparison_frame(comp):
    """`Comparison.frame()`: one row per side A, B and their paired difference (side "A - B", its
    `estimate` ΔI), each estimate with ci_low / ci_high, bound, ci_level, h_upper (the sides), p, se
    and slack (the difference), n shared samples and `unit`, at full precision."""
    import pandas as pd

    d = comp.difference
    rows = []
    for tag, side in (("A", comp.side_a), ("B", comp.side_b)):
        rows.append({"side": tag, "term": comp.term, "store": side.get("store"), "layer": side.get("layer"),
                     "pool": side.get("pool"), "estimator": comp.estimator, "estimate": side.get("estimate"),
                     "ci_low": side.get("ci_low"), "ci_high": side.get("ci_high"),
                     "bound": side.get("bound") or "two-sided", "ci_level": side.get("ci_level", d.ci_level),
                     "h_upper": side.get("h_upper"), "p": None, "se": None, "slack": None, "n": d.n,
                     "clipped": side.get("clipped"), "flags": ",".join(side.get("flags") or ()), "unit": d.unit})
    rows.append({"side": DIFFERENCE_SIDE, "term": comp.term, "store": None, "layer": None, "pool": None,
                 "estimator": comp.estimator, "estimate": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high,
                 "bound": "two-sided", "ci_level": d.ci_level, "h_upper": None, "p": d.p_value,
                 "se": getattr(d, "se", None), "slack": getattr(d, "slack", None), "n": d.n, "clipped": None,
                 "flags": "", "unit": d.unit})
    return pd.DataFrame(rows)


def comparison_machine(comp, shown: Table) -> Table:
    """`compare`'s numbers for CSV and JSON (it writes no CSV of its own: `--out` is the JSON of
    `Comparison.to_dict()`): `comparison_frame`, its columns described."""
    d = comp.difference
    meta = {"side": ("", f"A, B, or {DIFFERENCE_SIDE}: the paired difference ΔI = I_A - I_B on the shared samples "
                         "(same folds and seeds)"),
            "term": ("", "MI term: I(Z;target|given)"), "store": ("", "the side's store"),
            "layer": ("", "layer key as stored"), "pool": ("", "pooling of the hidden states"),
            "estimator": ("", "MI estimator"),
            "estimate": ("info", f"the side's estimate; for {DIFFERENCE_SIDE}: ΔI, the mean over the shared "
                                 "samples of A's minus B's per-sample term"),
            "ci_low": ("info", f"interval's lower end; for {DIFFERENCE_SIDE}: "
                               f"{getattr(d, 'method', 'paired bootstrap')}"),
            "bound": ("", "two-sided, or lower: only ci_low is a statement (the side's shortfall is not bounded; "
                          f"the {DIFFERENCE_SIDE} row's interval is then of the estimates' difference, see the note)"),
            "p": ("p", "two-sided p of ΔI = 0, inverting the A - B interval (empty: no p, see the note)"),
            "se": ("info", "standard error of ΔI"),
            "slack": ("info", "extrapolation slack added to both ends of ΔI's interval"),
            "n": ("count", "shared samples the term is estimated on"),
            "clipped": ("", "the side's raw estimate was outside [0, its entropy cap] and is shown clipped"),
            "flags": ("", "the side's estimator flags")}
    return machine_table(comparison_frame(comp), d.unit, meta, title=shown.title, footnotes=shown.footnotes,
                         name="comparison", numeric=("estimate", "ci_low", "ci_high", "ci_level", "h_upper", "p",
                                                     "se", "slack"))


def relation_table(rel) -> Table:
    """Per (checkpoint, stratum): n, MI with interval (``≥ x`` where the stratum's entry is one-sided),
    entropy, accuracy with interval, Fano's ceiling, whether the stratum is left out of ρ; CSV and JSON
    write the points as `relate --out x.csv` does, with the MI interval's bound and the unit."""
    lvl = f"{rel.ci_level:.0%}"
    cols = [Column("checkpoint", "checkpoint"), Column("modality", "M"), Column("anatomy", "A"),
            Column("task", "T"), Column("n", "n", "count", "answered rows in the stratum"),
            Column("mi", "Î [CI]", rel.unit, f"I(Z;Y|stratum) with its {lvl} interval (≥ x: one-sided)", ".3f"),
            Column("h", "H(Y|s)", rel.unit, "plug-in entropy of Y in the stratum", ".3f"),
            Column("accuracy", "accuracy [CI]", "probability",
                   f"stored accuracy with its {lvl} Clopper-Pearson interval", ".3f"),
            Column("fano_acc_max", "Fano max acc. [CI]", "probability",
                   f"largest accuracy Fano allows given Î, with the ceilings at the ends of Î's {lvl} interval "
                   "(≥ x where Î is one-sided: no ceiling below 1 is shown)", ".3f"),
            Column("sparse", "sparse (left out of ρ)",
                   description="stratum with fewer answered rows than --min-stratum: left out of the Spearman "
                               "correlation")]
    table = Table(cols, title=f"MI ({rel.unit}) vs accuracy per stratum")
    bounds = relation_bounds(rel.points)
    for r, bound in zip(rel.points.itertuples(), bounds):
        table.add_row(checkpoint=r.checkpoint, modality=r.modality, anatomy=r.anatomy, task=r.task, n=r.n,
                      mi=interval_cell((r.mi, r.mi_ci_low, r.mi_ci_high), bound), h=r.h,
                      accuracy=(r.accuracy, r.acc_ci_low, r.acc_ci_high), fano_acc_max=_fano_cell(r, bound),
                      sparse="yes" if r.sparse else "")
    if rel.spearman == rel.spearman:
        table.footnotes.append(
            f"Spearman rho(MI, accuracy) = {rel.spearman:.3f}, "
            + (f"{lvl} bootstrap interval [{rel.ci_low:.3f}, {rel.ci_high:.3f}]" if rel.ci_low == rel.ci_low
               else "no bootstrap interval (see the note)")
            + f", p = {rel.p_value:.3g}, {rel.n_points} points{relation_p_method(rel)}; Fano "
            f"ceiling for K = {rel.reference['classes']}")
    else:  # scipy's nan: a rank correlation with a constant column is not defined
        used = rel.points[~rel.points["sparse"]]
        same = "Î" if used["mi"].nunique() <= 1 else "the accuracy"
        table.footnotes.append(
            f"Spearman rho(MI, accuracy) is undefined: {same} is the same at all {rel.n_points} points used "
            f"(a rank correlation needs both to vary); Fano ceiling for K = {rel.reference['classes']}")
    if "lower" in bounds:
        table.footnotes.append(ONE_SIDED_FOOTNOTE)
    table.name = "points"
    table.machine = relation_machine(rel, bounds, table)
    return table


def _fano_cell(point, bound: str):
    """A point's Fano ceiling with the ceilings at its MI interval's ends; points written before
    those were kept show the ceiling alone."""
    low, high = getattr(point, "fano_acc_max_ci_low", None), getattr(point, "fano_acc_max_ci_high", None)
    if low is None or high is None:
        return point.fano_acc_max
    return interval_cell((point.fano_acc_max, low, high), bound)


def relation_p_method(rel) -> str:
    """How `relate`'s p was found, for its footnote: the points of one stratum (over the checkpoints) and
    of one checkpoint are not independent, so the p permutes whole strata (`theory.relate.
    stratum_permutation_test`); its smallest possible value is 1 / the arrangements counted."""
    if not getattr(rel, "p_method", ""):
        return ""
    return (f" (p from a {rel.p_method}, smallest possible p = 1/{rel.n_permutations}: points of one stratum or "
            "one checkpoint are not independent)")


def relation_bounds(points) -> list[str]:
    """Each point's MI interval bound, as `check` reads a stratum's (`theory.check._mi_value`): "lower"
    where its stratum entry is one-sided or its estimate sits at NEAR_SATURATION of H(Y|s) or more
    (`mi.interface.near_saturation`), else "two-sided". The points hold no bound of their own: a one-sided
    entry says so only in its `note` ("lower bound: ci_high is H(Y|C=c)'s upper confidence limit",
    `StratumEstimate.note`)."""
    from matprobe.mi.interface import near_saturation, stratum_entry_one_sided

    notes = points["note"] if "note" in points else [""] * len(points)
    return ["lower" if stratum_entry_one_sided(note) or near_saturation(mi, h) else "two-sided"
            for note, mi, h in zip(notes, points["mi"], points["h"])]


def relation_frame(rel, bounds: list[str] | None = None):
    """`Relation.frame()`: the points as `relate --out x.csv` writes them (`write_relation`), with the MI
    interval's `mi_bound` beside mi_ci_high and `unit` beside h (mi, its interval and h are in it)."""
    frame = rel.points.copy()
    frame.insert(list(frame.columns).index("mi_ci_high") + 1, "mi_bound",
                 relation_bounds(rel.points) if bounds is None else bounds)
    frame.insert(list(frame.columns).index("h") + 1, "unit", rel.unit)
    return frame


def relation_machine(rel, bounds: list[str], shown: Table) -> Table:
    """`relate`'s points for CSV and JSON: `relation_frame`, its columns described."""
    frame = relation_frame(rel, bounds)
    lvl = f"{rel.ci_level:.0%}"
    meta = {"checkpoint": ("", "checkpoint (the store's model, as named across the stores)"),
            "store": ("", "store path"), "modality": ("", "modality of the stratum"),
            "anatomy": ("", "anatomy of the stratum"), "task": ("", "task of the stratum"),
            "n": ("count", "answered rows in the stratum"), "mi": ("info", "MI estimate Î(Z;Y|stratum)"),
            "mi_ci_low": ("info", f"Î's {lvl} interval, lower end"),
            "mi_ci_high": ("info", f"Î's {lvl} interval, upper end (where mi_bound is lower: the entropy cap's "
                                   "upper confidence limit, no statement)"),
            "mi_bound": ("", "two-sided, or lower: only mi_ci_low is a statement"),
            "h": ("info", "plug-in entropy H(Y|s) of Y in the stratum"),
            "unit": ("", "unit of mi, mi_ci_low, mi_ci_high and h (nats or bits)"),
            "classes": ("count", "K: classes of Y in the stratum (at least 2)"),
            "accuracy": ("probability", "stored accuracy in the stratum"),
            "acc_ci_low": ("probability", f"accuracy's {lvl} Clopper-Pearson interval, lower end"),
            "acc_ci_high": ("probability", f"accuracy's {lvl} Clopper-Pearson interval, upper end"),
            "fano_acc_max": ("probability", "largest accuracy Fano allows given Î"),
            "fano_acc_max_ci_low": ("probability", "Fano's ceiling at mi_ci_low (the ceiling increases with I)"),
            "fano_acc_max_ci_high": ("probability", "Fano's ceiling at mi_ci_high (where mi_bound is lower: no "
                                                    "statement)"),
            "sparse": ("", "stratum with fewer answered rows than --min-stratum: left out of the correlation"),
            "note": ("", "the stratum's estimator note")}
    return machine_table(frame, rel.unit, meta, title=shown.title, footnotes=shown.footnotes, name="points")


def store_info_tables(info: dict, verbose: bool = False) -> list[Table]:
    """`store info`: the feature arrays, answers per triplet, the label columns and (with
    `verbose`) every provenance field; without it, one line says how many there are."""
    acc, ci = info.get("accuracy"), info.get("accuracy_ci")
    lvl = f"{info.get('ci_level', 0.95):.0%}"
    overall = ""
    if acc is not None:
        overall = f", accuracy {acc:.3f}"
        if ci is not None:  # a store's info from before the interval was added has none
            overall += (f" [{ci[0]:.3f}, {ci[1]:.3f}] ({info['correct']} of {info['answers_stored']} right, "
                        f"{lvl} Clopper-Pearson interval)")
    feats = Table([Column("layer", "layer"), Column("pool", "pool"), Column("dim", "dim", "count")],
                  title=f"{info['path']}: {info['n_done']} / {info['n_samples']} samples done"
                        + (" (virtual merge)" if info.get("virtual") else "")
                        + f"; answers stored: {info['answers_stored']}"
                        + overall + "; features (float32)")
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
    # CSV (the first table) and JSON (all): raw values under the names `store info --json` gives them
    feats.name, labels.name, prov.name = "features", "labels", "provenance"
    labels.machine = Table([Column("column", "column"), Column("n", "n labels", "count"),
                            Column("labels", "labels", description="the column's labels, in code order",
                                   whole=True)],
                           [{"column": col, "n": len(values), "labels": list(values)}
                            for col, values in info["label_columns"].items()],
                           labels.title, list(labels.footnotes), "labels")
    prov.machine = Table(prov.columns, [{"key": k, "value": v} for k, v in sorted(info["provenance"].items())],
                         prov.title, [], "provenance")
    tables = [feats]
    if info["answers_stored"] and info.get("by_triplet"):
        scores = Table([Column("modality", "modality"), Column("anatomy", "anatomy"), Column("task", "task"),
                        Column("n", "n", "count", "answered items"),
                        Column("correct", "right", "count", "answered items chosen right"),
                        Column("accuracy", f"accuracy [{lvl} CI]", "fraction",
                               f"share of answered items chosen right, with its {lvl} Clopper-Pearson interval "
                               "(exact binomial, as `check` gives a stratum's error)", fmt=".3f"),
                        Column("n_seg", "seg. items", "count", "items whose options are masks"),
                        Column("ciou", "cIoU", "fraction", "Σ intersection / Σ union over segmentation items",
                               fmt=".3f")],
                       title=f"answers per (M, A, T): accuracy with its {lvl} Clopper-Pearson interval"
                             + ("; cIoU = Σ I / Σ U over segmentation items"
                                if any(r.get("n_segmentation") for r in info["by_triplet"]) else ""))
        for r in info["by_triplet"]:
            low, high = r.get("accuracy_ci_low"), r.get("accuracy_ci_high")
            scores.add_row(modality=str(r.get("modality")), anatomy=str(r.get("anatomy")), task=str(r.get("task")),
                           n=r["answered"], correct=r.get("correct"),
                           accuracy=(r["accuracy"], low, high) if low is not None else r["accuracy"],
                           n_seg=r["n_segmentation"] or None, ciou=r["cIoU"])
        scores.footnotes.append(f"accuracy = right / n, with its exact {lvl} Clopper-Pearson interval [low, high]")
        scores.name = "answers"
        keys = list(dict.fromkeys(k for r in info["by_triplet"] for k in r))
        units = {"n": "count", "answered": "count", "correct": "count", "n_segmentation": "count",
                 "accuracy": "fraction", "accuracy_ci_low": "fraction", "accuracy_ci_high": "fraction",
                 "cIoU": "fraction"}
        described = {"correct": "answered items chosen right",
                     "accuracy_ci_low": f"accuracy's {lvl} Clopper-Pearson interval, lower end",
                     "accuracy_ci_high": f"accuracy's {lvl} Clopper-Pearson interval, upper end"}
        scores.machine = Table([Column(k, k, units.get(k, ""), described.get(k, "")) for k in keys],
                               [dict(r) for r in info["by_triplet"]], scores.title, list(scores.footnotes),
                               "answers")
        tables.append(scores)
    return tables + [labels] + ([prov] if verbose else [])


# ---------------------------------------------------------------- results' display tables
# Each typed result's `.to_table()` / `.tables()` calls one of these: the table model is built here,
# in the presentation package, and nowhere else (issue 24).


def not_identifiable(term: str) -> str:
    """How a term with H(Y|C) = 0 is shown: 'I(Z;A|M)' -> 'not identifiable: H(A|M) = 0'."""
    inner = term[len("I(Z;"):-1] if term.startswith("I(Z;") and term.endswith(")") else term
    return f"not identifiable: H({inner}) = 0"


def _pca_text(result, asked) -> str:
    """The PCA size asked for and, where the fold plan raised it (`FoldPlan.settle_reduction`),
    the size the terms were read at."""
    used = {red["used"] for items in result.terms.values() for _, e in items
            for red in [(e.diagnostics or {}).get("reduction")] if red and red["used"] != red["requested"]}
    if not used:
        return str(asked or "none")
    sizes = ", ".join("every coordinate" if u is None else str(u)
                      for u in sorted(used, key=lambda u: float("inf") if u is None else u))
    return f"{asked} raised to {sizes} (the reduction dropped label information: see the note)"


def chain_table(result):
    """The `matprobe mi` display table (matprobe.present.Table): one row per term and estimator."""
    import pandas as pd

    level = result.settings.get("level")
    lvl = f"{level:.0%}" if level else "CI"
    unit = result.unit
    cols = [Column("term", "term", description="MI term: I(Z;target|given)"),
            Column("estimator", "estimator", description="MI estimator"),
            Column("estimate", "estimate", unit, "point estimate", ".3f"),
            Column("interval", f"{lvl} interval", unit, f"{lvl} interval of the estimate", ".3f"),
            Column("h_upper", "H limit", unit, "entropy of the target given the conditioning set "
                   "(largest possible value)", ".3f"),
            Column("chain_difference", "I(Z;Y,C) - I(Z;C)", unit,
                   "the term as a chain-rule difference I(Z;Y,C) - I(Z;C) (cross-check)", ".3f"),
            Column("note", "note", description="estimator notes")]
    frame = result.frame()
    if "selectivity" in frame:  # control tasks (matprobe.mi.controls)
        cols[-1:-1] = [Column("control", "control Î", unit, "the control task's estimate (labels drawn from the "
                              "target's frequencies per stratum), clipped to [0, cap] as the estimate is", ".3f"),
                       Column("selectivity", "selectivity", unit, "estimate minus the control task's estimate, "
                              "with its paired interval (≥ x where the term is one-sided)", ".3f")]
    if "compression" in frame:  # online codelength (matprobe.mi.codelength)
        cols[-1:-1] = [Column("online_bits", "online code (bits)", "bits", "prequential codelength of the target "
                              "given Z (and the conditioning factors)", ".1f"),
                       Column("compression", "compression", description="uniform codelength / online "
                              "codelength", fmt=".2f")]
    if "p_perm" in frame:  # permutation nulls were run (matprobe.mi.controls)
        cols[-1:-1] = [Column("excess", "excess over null", unit, "estimate minus the mean of the estimates "
                              "on labels permuted within the conditioning strata", ".3f"),
                       Column("p_perm", "perm. p", description="permutation p-value, (1 + #{null >= "
                              "estimate}) / (1 + B)", fmt=".3f")]
    # CSV and JSON only: the interval's kind, which the text formats show as "≥ x"
    cols.append(Column("bound", "bound", description="two-sided, or lower: only the interval's lower end is a "
                       "statement (its upper end is the entropy cap)", machine_only=True))
    where = ""
    if result.meta:
        where = f", {result.meta.get('store')} layer {result.meta.get('layer')} pool {result.meta.get('pool')}"
    st = result.settings
    table = Table(cols, title=f"MI chain ({unit}){where}")
    if st:
        table.footnotes.append(f"{st.get('seeds')} seeds x {st.get('folds')} folds, PCA "
                               f"{_pca_text(result, st.get('pca'))}, {lvl} intervals, seed {st.get('seed')}")
    if result.meta.get("note"):
        table.footnotes.append(result.meta["note"])
    if "chain_difference" in frame and frame["chain_difference"].notna().any():
        table.footnotes.append("I(Z;Y,C) - I(Z;C): the term as the difference of two estimates (the chain rule), a "
                               "cross-check of the estimate; each part is estimated on its own, so it can pass the "
                               "term's cap")
    if len(result.factors) > 1:  # two README-only studies took a term's change with --factors for an error
        table.footnotes.append(f"every term is estimated within this chain ({', '.join(result.factors)}): one fold "
                               "plan stratified by all its factors, the later factors the critic's sub-classes; the "
                               "same term in another chain (--factors) is another estimate of the same MI")
    if "p_perm" in frame:
        table.footnotes.append(f"permutation null: {st.get('permutations')} permutations of the target within "
                               "the conditioning strata, same folds and preprocessing; p can be no smaller "
                               f"than 1/{int(st.get('permutations') or 0) + 1}")
    for r in frame.itertuples():
        # H(Y|C) = 0: the data cannot separate Y from C; 0.000 would read as a finding. A constant Z is
        # degenerate too, but estimated (exactly 0, its note says why): shown as a result
        constant = "constant-features" in str(getattr(r, "flags", "") or "")
        if r.degenerate and not constant:
            table.add_row(term=r.term, estimator=r.estimator, estimate=not_identifiable(r.term),
                          interval=None, h_upper=r.h_upper, chain_difference=None,
                          note="the factor is fixed by the conditioning factors in every stratum")
            continue
        extra = ({"excess": r.excess, "p_perm": r.p_perm} if "p_perm" in frame and not pd.isna(r.p_perm)
                 else {})
        if "selectivity" in frame and not pd.isna(r.selectivity):
            # a one-sided term's selectivity states its lower end only, as the term does (a study read
            # 0.142 [0.035, 0.193] beside a term "≥ 0.035" whose cap was 0.154)
            extra["selectivity"] = interval_cell((r.selectivity, r.selectivity_low, r.selectivity_high), r.bound)
            extra["control"] = r.control if "control" in frame and not pd.isna(r.control) else None
        if "compression" in frame and not pd.isna(r.compression):
            extra.update(online_bits=r.online_bits, compression=r.compression)
        table.add_row(term=r.term, estimator=r.estimator, estimate=r.estimate,
                      interval=interval_cell((r.ci_low, r.ci_high), r.bound), h_upper=r.h_upper,
                      chain_difference=r.chain_difference, note=r.note, bound=r.bound or None, **extra)
    if (frame["bound"] == "lower").any():
        table.footnotes.append(ONE_SIDED_FOOTNOTE)
    # CSV and JSON: `ChainResult.frame()`, the table `mi --out x.csv` writes (same columns, same numbers)
    table.machine = machine_table(frame, unit, {
        "term": ("", "MI term: I(Z;target|given)"), "estimator": ("", "MI estimator"),
        "chain_difference": ("info", "the term as a chain-rule difference I(Z;Y,C) - I(Z;C) (cross-check)"),
        "degenerate": ("", "H(Y|C) = 0: the term is not identifiable (exactly 0)"),
        "selectivity": ("info", "estimate minus the control task's estimate"),
        "selectivity_low": ("info", "selectivity interval's lower end"),
        "selectivity_high": ("info", "selectivity interval's upper end"), "control": ("info", "control task's estimate"),
        "excess": ("info", "estimate minus the permutation null's mean"), "online_bits": ("bits", "online codelength"),
        "uniform_bits": ("bits", "uniform codelength"), "p_perm": ("p", "permutation p-value")},
        title=table.title, footnotes=table.footnotes, name="terms")
    return table


def _merged_fano(result) -> bool:
    """Fano's columns of `result` are of Y with the MI's rare classes merged (Y', `theory.check`)."""
    return bool(result.merged_target) and result.merged_target.get("fano") == "merged"


def merged_label_note(result) -> str | None:
    """What the check's Y' is and why its columns are valid for the error on Y; None without a merge.
    Files written before "fano" was recorded (Fano of Y itself, no floor) keep their old note."""
    from matprobe.mi.merge import merge_words

    m, target = result.merged_target, result.target
    if not m:
        return None
    merge = merge_words(target, m, m.get("class_rows"))
    if not _merged_fano(result):
        return (f"Î is of {target} with rare classes merged into one ({merge}; the MI results' rare_classes = "
                f"merge): at most the MI of {target} itself, so no error floor is shown and only a 'yes' or "
                "'within CI' against Fano's bound is a statement")
    return (f"Y' = {target} as the MI saw it, rare classes merged into one ({merge}; the MI results' "
            f"rare_classes = merge). H(Y'|s), K, Î, Fano's bound and the ε floor are all of Y'; the error is "
            f"of {target} itself, at least the error on Y' (a right answer is right on Y' too), so Fano's "
            "bound and floor for Y' hold for it (φ is taken at min(ε, 1 - 1/K), never falling as ε grows). "
            f"H and K of {target} itself: h_y_unmerged, classes_unmerged in the JSON")


def check_table(result, unit: str = "nats"):
    """Per-stratum table in `unit` (nats or bits). Where the MI merged Y's rare classes, every Fano
    column is of the merged label Y' (`merged_label_note`), and the heads say so."""
    from matprobe.units import check_unit, from_nats

    check_unit(unit)

    def conv(v):
        return None if v is None else from_nats(v, unit)

    lvl = f"{result.level:.0%}"
    y = "Y'" if _merged_fano(result) else "Y"
    cols = [
        Column("modality", "M", description="modality of the stratum"),
        Column("anatomy", "A", description="anatomy of the stratum"),
        Column("task", "T", description="task of the stratum"),
        Column("n", "n", "count", "answered rows in the stratum"),
        Column("error", f"error [{lvl} CI]", "probability",
               f"observed error rate ε on Y with its {lvl} Clopper-Pearson interval", ".3f"),
        Column("h_y", f"H({y}|s)", unit, f"plug-in entropy of {y} in the stratum", ".3f"),
        Column("mi", "Î [CI]" if y == "Y" else "Î(Z;Y'|s) [CI]", unit,
               f"MI estimate Î(Z;{y}|stratum) with its interval", ".3f"),
        Column("error_floor", "ε floor", "probability", "smallest error Fano allows given Î", ".3f"),
        Column("error_ok", "ε ok", "", "observed ε respects the floor: yes / within CI / NO"),
        Column("mi_lower", "I >= (finite)", unit,
               f"Fano's lower bound on I(Z;{y}|s) from ε (in brackets: with ε's upper limit at δ = {result.delta}), "
               "shown as max(bound, 0): a bound below 0 demands nothing"),
        Column("mi_ok", "Î ok", "", "Î reaches the bound: yes / within CI / NO"),
    ]
    table = Table(cols, title=f"check: {result.y_description}; {unit}, δ = {result.delta}, {lvl} intervals")
    for s in result.strata:
        mi = s.mi
        table.add_row(
            modality=s.given.get("modality"), anatomy=s.given.get("anatomy"), task=s.given.get("task"),
            n=s.n,
            error=(s.error, s.error_ci[0], s.error_ci[1]),
            h_y=conv(s.h_y),
            mi=None if mi is None or mi.estimate is None else
            interval_cell((conv(mi.estimate), conv(mi.ci_low), conv(mi.ci_high)), mi.bound),
            error_floor=s.error_floor, error_ok=s.error_respects_floor,
            mi_lower=f"{max(conv(s.fano_mi_lower), 0.0):.3f} ({max(conv(s.fano_mi_lower_finite), 0.0):.3f})",
            mi_ok=s.mi_meets_bound)
    if any(min(s.fano_mi_lower, s.fano_mi_lower_finite) < 0 for s in result.strata):
        table.footnotes.append(f"I >= (finite): Fano's bound H({y}|s) - φ(ε) below 0 demands nothing (MI >= 0 "
                               "anyway) and is shown as 0.000")
    if note := merged_label_note(result):
        table.footnotes.append(note)
    if result.estimated_here:
        est = result.estimated_here
        if "command" in est:
            table.footnotes.append("the MI results hold no term for Y; to fill Î, run: " + est["command"])
        else:
            st = est.get("settings", {})
            table.footnotes.append(
                f"Î estimated by check (the MI results hold no term for Y): {est.get('term')} on layer "
                f"{est.get('layer')} pool {est.get('pool')}, {st.get('estimator')}, {st.get('seeds')} seeds x "
                f"{st.get('folds')} folds, pca {st.get('pca')}")
    table.name = "strata"
    table.machine = check_machine_strata(result, unit, table)
    return table


# the check JSON's numbers in the unit asked for (the file is in nats)
_CHECK_INFO = ("h_y", "fano_mi_lower", "fano_mi_lower_finite", "mi", "mi_ci_low", "mi_ci_high", "h_y_unmerged")


def check_machine_strata(result, unit: str, shown: Table) -> Table:
    """`check`'s per-stratum rows for CSV and JSON: check.json's numbers at full precision and under its
    names (Fano's bounds as computed, below 0 too), the MI interval as mi_ci_low / mi_ci_high with its
    mi_bound, and `unit` beside the information-valued columns."""
    import pandas as pd

    from matprobe.units import from_nats

    rows = []
    for s in result.strata:
        mi = s.mi if s.mi is not None and s.mi.estimate is not None else None
        rows.append({**{str(k): v for k, v in s.given.items()}, "n": s.n, "errors": s.errors, "error": s.error,
                     "error_ci_low": s.error_ci[0], "error_ci_high": s.error_ci[1], "error_upper": s.error_upper,
                     "classes": s.classes, "error_floor": s.error_floor, "error_floor_lenient": s.error_floor_lenient,
                     "error_respects_floor": s.error_respects_floor, "h_y": s.h_y,
                     "fano_mi_lower": s.fano_mi_lower, "fano_mi_lower_finite": s.fano_mi_lower_finite,
                     "mi": mi and mi.estimate, "mi_ci_low": mi and mi.ci_low, "mi_ci_high": mi and mi.ci_high,
                     "unit": unit, "mi_bound": mi and (mi.bound or "two-sided"), "mi_ci_level": mi and mi.ci_level,
                     "mi_estimator": mi and mi.estimator, "mi_source": s.mi_source, "mi_meets_bound": s.mi_meets_bound,
                     **{str(k): v for k, v in s.extra.items() if v is None or isinstance(v, (str, int, float))}})
        for key in _CHECK_INFO:
            if rows[-1].get(key) is not None:
                rows[-1][key] = from_nats(rows[-1][key], unit)
    lvl = f"{result.level:.0%}"
    y = "Y'" if _merged_fano(result) else "Y"
    of_y = " (Y' = Y with the MI's rare classes merged)" if y == "Y'" else ""
    meta = {"n": ("count", "answered rows in the stratum"), "errors": ("count", "wrong answers"),
            "error": ("probability", "observed error rate ε on Y"),
            "error_ci_low": ("probability", f"ε's {lvl} Clopper-Pearson interval, lower end"),
            "error_ci_high": ("probability", f"ε's {lvl} Clopper-Pearson interval, upper end"),
            "error_upper": ("probability", f"ε's upper limit at δ = {result.delta}"),
            "classes": ("count", f"classes of {y} in the stratum{of_y}"),
            "classes_unmerged": ("count", "classes of Y itself in the stratum (the rare classes apart)"),
            "h_y_unmerged": ("info", "plug-in entropy of Y itself in the stratum (the rare classes apart)"),
            "error_floor": ("probability", "smallest error Fano allows given Î"),
            "error_floor_lenient": ("probability", "smallest error Fano allows given Î's upper end"),
            "error_respects_floor": ("", "observed ε respects the floor: yes / within CI / NO"),
            "h_y": ("info", f"plug-in entropy of {y} in the stratum{of_y}"),
            "fano_mi_lower": ("info", f"Fano's lower bound on I(Z;{y}|s) from ε (below 0: demands nothing)"),
            "fano_mi_lower_finite": ("info", f"the same with ε's upper limit at δ = {result.delta}"),
            "mi": ("info", f"MI estimate Î(Z;{y}|stratum)"), "mi_ci_low": ("info", "Î's interval, lower end"),
            "mi_ci_high": ("info", "Î's interval, upper end (where mi_bound is lower: the entropy cap, no statement)"),
            "unit": ("", "unit of h_y(_unmerged), fano_mi_lower(_finite), mi, mi_ci_low, mi_ci_high (nats or bits)"),
            "mi_bound": ("", "two-sided, or lower: only mi_ci_low is a statement"),
            "mi_ci_level": ("", "level of Î's interval"), "mi_estimator": ("", "MI estimator"),
            "mi_meets_bound": ("", "Î reaches the bound: yes / within CI / NO")}
    notes = [f for f in shown.footnotes if not f.startswith("I >= (finite):")]
    return machine_table(pd.DataFrame(rows), unit, meta, title=shown.title, footnotes=notes, name="strata")


def check_tables(result, unit: str = "nats") -> list:
    """Per-stratum table, aggregate terms and PAC bounds, in `unit`."""
    from matprobe.units import from_nats

    a, p = result.aggregate, result.pac
    y = "Y'" if _merged_fano(result) else "Y"
    agg = Table([Column("quantity", "quantity"), Column("value", "value", fmt=".4f"),
                 Column("unit", "unit"), Column("note", "note")],
                title=f"aggregate over {a.n} answered rows ({a.errors} errors)"
                      + ("; Y' as in the strata table: Y with the MI's rare classes merged" if y == "Y'" else ""))
    agg.add_row(quantity="ε (observed error)", value=a.error, unit="probability",
                note=f"{result.level:.0%} CI [{a.error_ci[0]:.4f}, {a.error_ci[1]:.4f}]"
                     + (f"; of {result.target} itself, at least the error on Y'" if y == "Y'" else ""))
    # the strata (and Î) are conditioned on (M, A, T); CrossMed eq. 8 conditions on (M, A) only, a
    # bound on I(Z;Y|M,A) (the term I(Z;Y|M,A) is held against it), not on Î(Z;Y|M,A,T)
    for q, v, note in ((f"H({y}|M,A,T)", a.h_y_given_mat, "the strata's conditioning"),
                       (f"I(Z;{y}|M,A,T) >=", a.fano_mi_lower_given_mat, f"H({y}|M,A,T) - φ(ε)"),
                       ("stratum average bound (M,A,T)", a.fano_mi_lower_stratified,
                        f"Σ p_s max(0, H({y}|s) - φ(ε_s)) over the (M, A, T) strata"),
                       (f"H({y}|M,A)", a.h_y_given_ma, "eq. 8's conditioning: given M, A only (T not given)"),
                       (f"I(Z;{y}|M,A) >=", a.fano_mi_lower_given_ma,
                        f"H({y}|M,A) - φ(ε); bounds I(Z;{y}|M,A), not I(Z;{y}|M,A,T)"),
                       (f"paper eq. 8 (H({y}))", a.paper_eq8, str(a.paper_eq8_audit.get("verdict", "")))):
        if not q.startswith("H(") and v <= 0:  # MI is never negative: such a bound says nothing
            note = "; ".join(part for part in (note, "vacuous (≤ 0: MI ≥ 0 anyway)") if part)
        agg.add_row(quantity=q, value=from_nats(v, unit), unit=unit, note=note)
    # the strata's Î as shown, each clipped at 0 on its own; their rows-weighted mean can exceed the
    # term's Î, the mean of its raw per-row terms clipped once (a study read strata at 0.120 and 0.229
    # beside a term at 0.0000, unexplained)
    shown = [(s.n, s.mi.estimate) for s in result.strata if s.mi is not None and s.mi_source == "stratum"
             and s.mi.estimate is not None]
    strata_mean = sum(n * v for n, v in shown) / sum(n for n, _ in shown) if shown else None
    for t in a.terms:
        against = {"stratum average": "stratum average bound (M,A,T)"}.get(t.compared_with, t.compared_with)
        why = ""
        if strata_mean is not None and strata_mean > t.mi.estimate + 5e-5:
            why = (f"; the strata's Î above, each clipped at 0 on its own, average {from_nats(strata_mean, unit):.4f}: "
                   "the term's Î is the mean of the raw per-row terms of every stratum (those below 0 too), "
                   "clipped once")
        agg.add_row(quantity=f"{t.term}: Î" + (" (of Y')" if y == "Y'" else ""), value=from_nats(t.mi.estimate, unit),
                    unit=unit,
                    note=f"vs bound {from_nats(t.fano_mi_lower, unit):.4f} ({against}): "
                         f"{t.mi_meets_bound}{why}")
    pac_t = Table([Column("bound", "bound"), Column("value", "R <=", "probability", fmt=".6g"),
                   Column("flag", "flag"), Column("note", "note")],
                  title=f"PAC: held-out ({p.heldout}) {p.errors}/{p.m} errors = {p.error:.4f} "
                        f"[{p.error_ci[0]:.4f}, {p.error_ci[1]:.4f}]")
    pac_t.add_row(bound="test-set (binomial tail inversion)", value=p.test_set_bound, flag="ok",
                  note=f"δ = {result.delta}")
    for b in p.bounds:
        flag = "VACUOUS" if b.vacuous else ("CONTRADICTED" if b.contradicted else "ok")
        pac_t.add_row(bound=b.name, value=b.value, flag=flag, note=b.note)
    agg.name, pac_t.name = "aggregate", "pac"
    agg.machine = _check_machine_aggregate(result, unit, agg)
    pac_t.machine = Table([Column("name", "bound", description="bound on the true risk R"),
                           Column("value", "R <=", "probability", "the bound (>= 1 says nothing)"),
                           Column("flag", "flag", description="ok, VACUOUS (>= 1) or CONTRADICTED (below the "
                                  "held-out error's lower limit)"), Column("note", "note")],
                          [{"name": r["bound"], **{k: r[k] for k in ("value", "flag", "note")}} for r in pac_t.rows],
                          pac_t.title, list(pac_t.footnotes), "pac")
    return [check_table(result, unit), agg, pac_t]


def _check_machine_aggregate(result, unit: str, shown: Table) -> Table:
    """The aggregate rows for JSON: each value with its interval (ε, the terms' Î: ci_low, ci_high and
    bound) and unit, and the bound a term is held against as a number (`fano_mi_lower`)."""
    from matprobe.units import from_nats

    a = result.aggregate
    rows = [dict(r, ci_low=None, ci_high=None, bound=None, fano_mi_lower=None) for r in shown.rows]
    rows[0].update(ci_low=a.error_ci[0], ci_high=a.error_ci[1])  # ε: its Clopper-Pearson interval
    for row, t in zip(rows[len(rows) - len(a.terms):], a.terms):
        row.update(ci_low=None if t.mi.ci_low is None else from_nats(t.mi.ci_low, unit),
                   ci_high=None if t.mi.ci_high is None else from_nats(t.mi.ci_high, unit),
                   bound=t.mi.bound or "two-sided", fano_mi_lower=from_nats(t.fano_mi_lower, unit))
    cols = [Column("quantity", "quantity"), Column("value", "value", description="the quantity in its unit"),
            Column("ci_low", "ci_low", description="interval's lower end (ε, Î)"),
            Column("ci_high", "ci_high", description="interval's upper end (ε, Î)"),
            Column("bound", "bound", description="Î's interval: two-sided, or lower (only ci_low is a statement)"),
            Column("unit", "unit", description="unit of value, ci_low, ci_high and fano_mi_lower"),
            Column("fano_mi_lower", "fano_mi_lower", unit, "the Fano bound a term's Î is held against"),
            Column("note", "note")]
    return Table(cols, rows, shown.title, list(shown.footnotes), "aggregate")


def fano_table(result):
    table = Table([Column("quantity", "quantity", description="bound or quantity (Fano's inequality)"),
                   Column("value", "value", description="its value", fmt=".6g"),
                   Column("unit", "unit", description="unit of the value"),
                   Column("note", "note", description="what it is and whether it is valid")],
                  title=f"Fano, ε = {result.error}, K = {result.classes} ({result.unit})")
    for r in result.rows:
        table.add_row(**r)
    return table


def pac_table(result, unit: str = "nats"):
    from matprobe.units import from_nats

    extra = []
    if result.ln_h is not None:
        extra.append(f"ln|H| = {from_nats(result.ln_h, unit):.4g} {unit}")
    if result.kl_qp is not None:
        extra.append(f"KL(Q||P) = {from_nats(result.kl_qp, unit):.4g} {unit}")
    title = f"PAC bounds on R, R̂ = {result.emp_risk}, n = {result.n}, δ = {result.delta}" + (
        f" ({'; '.join(extra)})" if extra else "")
    table = Table([Column("name", "bound", description="bound on the true risk R"),
                   Column("value", "R <=", "probability", "the bound (>= 1 says nothing)", ".6g"),
                   Column("vacuous", "vacuous", description="VACUOUS when the bound is >= 1",
                          fmt=lambda v: "VACUOUS" if v else "no"),
                   Column("formula", "formula", description="formula evaluated"),
                   Column("note", "note", description=f"inputs of the formula ({unit})")], title=title)
    # the bounds' notes give their inputs in nats: in the unit asked for, as the title gives them
    said = {f"{name} = {value:.4g} nats": f"{name} = {from_nats(value, unit):.4g} {unit}"
            for name, value in (("ln|H|", result.ln_h), ("KL(Q||P)", result.kl_qp)) if value is not None}
    for b in result.bounds:
        row = b.to_dict()
        for old, new in said.items():
            row["note"] = str(row.get("note") or "").replace(old, new)
        table.add_row(**row)
    return table


def significance_table(result):
    """Table IX layout: rows comparisons, columns metrics, paired t-test p-values."""
    from matprobe.present import significance as formatting

    return formatting.significance_tables(result.results, result.unit)[0]


def significance_tables(result) -> list:
    """Table IX, the paired differences, their p-values (and the item level): what `matprobe
    significance` shows, and what its --out FILE.md|.tex writes."""
    from matprobe.present import significance as formatting

    return formatting.significance_tables(result.results, result.unit, result.items)


def significance_machine_tables(result) -> list:
    """The raw numbers for --format csv/json: every RESULT_COLUMNS column at full
    precision (interval as ci_low/ci_high with ci_level, the unit of analysis, the
    Wilcoxon and permutation variants), then the item-level rows if any."""
    from matprobe.present import significance as formatting

    return formatting.significance_machine_tables(result.results, result.unit, result.items)