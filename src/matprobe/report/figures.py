"""Report figures (matplotlib/seaborn), each written as PNG and SVG. Each function returns
the caption of its figure; the `draw_*` functions return the figure itself (for tests).

Every figure is drawn from the run's JSON/CSV results alone, so a report can be rebuilt
from a run directory without recomputing anything. Legends sit outside the axes, so they
never cover data; checkpoints of one condition share its hue in distinct shades.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CPU machines and CI
# SVG element ids are hashed with this salt instead of a random one: same run, same bytes
matplotlib.rcParams["svg.hashsalt"] = "matprobe"

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from matprobe.theory import fano  # noqa: E402

PALETTE = {"Related": "#1b9e77", "Unrelated": "#d95f02", "Zero-overlap": "#7570b3", "Any-overlap": "#666666",
           "Leave-one-out": "#e7298a", "Without Modality": "#66a61e", "Without Anatomy": "#a6761d",
           "Without Task": "#1f78b4"}


def _save(fig, path: Path) -> None:
    """PNG (for the HTML page) and SVG beside it; no timestamps, so a rebuild gives the same files."""
    from matprobe.io import atomic_path

    try:  # atomic: a failed write (full disk) leaves the previous figure, not half of a new one
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        with atomic_path(path.with_suffix(".svg")) as tmp:
            fig.savefig(tmp, format="svg", bbox_inches="tight", metadata={"Date": None})
    finally:
        plt.close(fig)


def _legend_outside(ax, **kwargs) -> None:
    """The legend to the right of the axes, where it cannot cover data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def checkpoint_colours(checkpoints: pd.DataFrame) -> dict[str, tuple]:
    """A colour per checkpoint: the condition's hue, a distinct shade per checkpoint within it.

    `checkpoints` has columns checkpoint, condition (and seed, for a stable order).
    """
    out: dict[str, tuple] = {}
    rows = checkpoints.drop_duplicates("checkpoint")
    order = ["condition", "seed"] if "seed" in rows else ["condition"]
    for cond, sub in rows.sort_values(order, kind="stable").groupby("condition", sort=False):
        base = np.asarray(matplotlib.colors.to_rgb(PALETTE.get(cond, "#666666")))
        names = list(sub["checkpoint"])
        # from 35% darker to 45% lighter than the condition's colour
        for name, t in zip(names, np.linspace(-0.35, 0.45, len(names)) if len(names) > 1 else [0.0]):
            shade = base * (1 + t) if t < 0 else base + (1 - base) * t
            out[name] = tuple(float(c) for c in np.clip(shade, 0, 1))
    return out


def _level_text(level: float | None) -> str:
    return f"{level:.0%}" if level is not None else "estimator's"


def draw_mi_chain(terms: pd.DataFrame, level: float | None = None):
    sns.set_theme(style="whitegrid")
    layers = list(dict.fromkeys(terms.loc[terms["main"], "layer_pool"])) if "main" in terms else []
    layers = layers or sorted(terms["layer_pool"].unique())
    fig, axes = plt.subplots(1, len(layers), figsize=(max(7, 5 * len(layers)), 4.2), squeeze=False)
    term_order = list(dict.fromkeys(terms["term"]))
    colours = checkpoint_colours(terms)
    for ax, lp in zip(axes[0], layers):
        sub = terms[terms["layer_pool"] == lp]
        names = [n for n in colours if n in set(sub["checkpoint"])]
        width = 0.8 / max(1, len(names))
        x = np.arange(len(term_order))
        for i, name in enumerate(names):
            rows = sub[sub["checkpoint"] == name].set_index("term").reindex(term_order)
            err = np.vstack([rows["estimate"] - rows["ci_low"], rows["ci_high"] - rows["estimate"]])
            ax.bar(x + (i - (len(names) - 1) / 2) * width, rows["estimate"], width,
                   yerr=np.clip(err, 0, None), color=colours[name], label=name, capsize=2)
        hmax = sub.groupby("term")["h_upper"].max().reindex(term_order)
        ax.scatter(x, hmax, marker="_", s=600, color="black", label="entropy cap H", zorder=3)
        ax.set_xticks(x, [t.replace("I(Z;", "").rstrip(")") for t in term_order], rotation=20, ha="right")
        ax.set_ylabel("nats")
        ax.set_title(f"MI chain, layer/pool {lp}")
    _legend_outside(axes[0][-1], fontsize=7)
    return fig


def mi_chain_bars(terms: pd.DataFrame, path: Path, level: float | None = None) -> str:
    """Bars: each chain term per checkpoint (grouped by condition), with its interval."""
    _save(draw_mi_chain(terms, level), path)
    names = ", ".join(dict.fromkeys(terms["term"].astype(str)))  # the run's own terms (a study of one task has no T)
    return (f"Each chain term ({names}) per checkpoint (bars; hue = training "
            f"condition, a distinct shade per checkpoint) with its {_level_text(level)} interval; black ticks "
            "mark the plug-in entropy that caps each term, and a one-sided term's whisker reaches that cap "
            "(only its lower end is a statement: the MI is at least it). Read: which factor the embedding encodes most, and "
            "whether the conditions differ by more than their intervals.")


def draw_baselines(terms: pd.DataFrame):
    sns.set_theme(style="whitegrid")
    panels = [c for c in ("selectivity", "compression") if c in terms and terms[c].notna().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    term_order = list(dict.fromkeys(terms["term"]))
    colours = checkpoint_colours(terms)
    names = [n for n in colours if n in set(terms["checkpoint"])]
    width = 0.8 / max(1, len(names))
    x = np.arange(len(term_order))
    for ax, col in zip(axes[0], panels):
        for i, name in enumerate(names):
            rows = terms[terms["checkpoint"] == name].set_index("term").reindex(term_order)
            err = None
            if col == "selectivity":
                err = np.clip(np.vstack([rows[col] - rows["selectivity_low"], rows["selectivity_high"] - rows[col]]),
                              0, None)
            ax.bar(x + (i - (len(names) - 1) / 2) * width, rows[col], width, yerr=err, color=colours[name],
                   label=name, capsize=2)
        ax.axhline(1.0 if col == "compression" else 0.0, color="black", lw=0.8)
        ax.set_xticks(x, [t.replace("I(Z;", "").rstrip(")") for t in term_order], rotation=20, ha="right")
        ax.set_ylabel("nats" if col == "selectivity" else "uniform / online code")
        ax.set_title("selectivity over the control task" if col == "selectivity" else "online-code compression")
    _legend_outside(axes[0][-1], fontsize=7)
    return fig


def baselines(terms: pd.DataFrame, path: Path) -> str:
    """Bars per chain term and checkpoint: selectivity over the control task (with its interval), and
    the online code's compression."""
    _save(draw_baselines(terms), path)
    return ("Left: each chain term's selectivity, its estimate minus the estimate on control labels (drawn from the "
            "factor's frequencies per stratum, fixed per image), with the paired interval; above 0, the embedding "
            "holds the factor beyond what a probe finds in meaningless labels. Right: compression of the online "
            "code (uniform bits / online bits); above 1, a probe extracts the factor from Z. Bars per checkpoint "
            "(hue = training condition).")


def draw_pointwise_strata(pointwise: pd.DataFrame, unit: str = "nats"):
    sns.set_theme(style="whitegrid")
    term_order = list(dict.fromkeys(pointwise["term"]))
    conds = list(dict.fromkeys(pointwise["condition"]))
    # one panel per term, stacked: stratum names are long, so they get the width
    sizes = [pointwise.loc[pointwise["term"] == t, "group"].nunique() for t in term_order]
    fig, axes = plt.subplots(len(term_order), 1, figsize=(8.0, 0.9 * len(term_order) + 0.3 * sum(sizes)),
                             squeeze=False, gridspec_kw={"height_ratios": [max(1, k) + 1.5 for k in sizes]})
    height = 0.8 / max(1, len(conds))
    for ax, term in zip(axes[:, 0], term_order):
        sub = pointwise[pointwise["term"] == term]
        groups = list(dict.fromkeys(sub["group"]))
        y = np.arange(len(groups))
        for i, cond in enumerate(conds):
            rows = sub[sub["condition"] == cond]
            if rows.empty:
                continue
            pos = y + (i - (len(conds) - 1) / 2) * height
            mean = rows.groupby("group")["contribution"].mean().reindex(groups)
            ax.barh(pos, mean, height, color=PALETTE.get(cond, "#666666"), alpha=0.55, label=cond)
            # each checkpoint's contribution as a dot on its condition's bar
            ax.scatter(rows["contribution"], rows["group"].map(dict(zip(groups, pos))), s=8,
                       color=PALETTE.get(cond, "#666666"), zorder=3)
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_yticks(y, groups, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(term, fontsize=9)
    axes[-1][0].set_xlabel(f"contribution ({unit})")
    _legend_outside(axes[0][0], fontsize=7)
    fig.tight_layout()
    return fig


def pointwise_strata(pointwise: pd.DataFrame, path: Path, unit: str = "nats") -> str:
    """Bars: each stratum's contribution to each chain term, per condition, with its checkpoints as dots."""
    _save(draw_pointwise_strata(pointwise, unit), path)
    return (f"Each chain term (one panel per term, stacked) split by stratum: the stratum's contribution n_s / n × its mean "
            f"pointwise information ({unit}), a bar per condition (the mean over its checkpoints) and a dot per "
            "checkpoint; a term's contributions add up to its estimate. Read: which strata the information comes "
            "from, and whether the conditions differ there.")


def _layer_order(layer: str) -> float:
    """embed < 0, 1, ... < final (the stored layer convention)."""
    if layer == "embed":
        return -1.0
    if layer == "final":
        return float("inf")
    try:
        return float(layer)
    except ValueError:
        return float("nan")


def draw_mi_by_layer(terms: pd.DataFrame, level: float | None = None):
    sns.set_theme(style="whitegrid")
    term_order = list(dict.fromkeys(terms["term"]))
    colours = checkpoint_colours(terms)
    pools = list(dict.fromkeys(terms["pool"]))
    styles = ["-", "--", ":", "-."]
    layer_names = sorted(terms["layer"].unique(), key=_layer_order)
    pos = {name: i for i, name in enumerate(layer_names)}
    fig, axes = plt.subplots(1, len(term_order), figsize=(3.3 * len(term_order) + 1.8, 3.8), squeeze=False)
    for ax, term in zip(axes[0], term_order):
        sub = terms[terms["term"] == term]
        for name in colours:
            for k, pool in enumerate(pools):
                rows = sub[(sub["checkpoint"] == name) & (sub["pool"] == pool)]
                if rows.empty:
                    continue
                rows = rows.assign(x=rows["layer"].map(pos)).sort_values("x")
                err = np.clip(np.vstack([rows["estimate"] - rows["ci_low"], rows["ci_high"] - rows["estimate"]]),
                              0, None)
                ax.errorbar(rows["x"], rows["estimate"], yerr=err, color=colours[name], ls=styles[k % 4],
                            marker="o", ms=3, capsize=2, lw=1.2,
                            label=name if len(pools) == 1 else f"{name}, {pool}")
        ax.set_xticks(range(len(layer_names)), layer_names)
        ax.set_xlabel("layer")
        ax.set_title(term, fontsize=9)
    axes[0][0].set_ylabel("nats")
    _legend_outside(axes[0][-1], fontsize=7)
    return fig


def mi_by_layer(terms: pd.DataFrame, path: Path, level: float | None = None) -> str:
    """Lines: each chain term against the layer, per checkpoint (shaded by condition), with intervals."""
    _save(draw_mi_by_layer(terms, level), path)
    return ("Each chain term (one panel per term) at every layer the run measured, one line per checkpoint "
            f"(hue = training condition, shade = checkpoint) with {_level_text(level)} intervals (a one-sided "
            "term's reaches its entropy cap: only its lower end is a statement). Read: where "
            "in the network each factor becomes decodable, and whether the conditions part at some depth.")


def draw_mi_vs_accuracy(strata: pd.DataFrame):
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for cond, sub in strata.groupby("condition"):
        ax.errorbar(sub["mi"], 1 - sub["error"],
                    xerr=np.clip(np.vstack([sub["mi"] - sub["mi_low"], sub["mi_high"] - sub["mi"]]), 0, None),
                    fmt="o", color=PALETTE.get(cond, "grey"), alpha=0.75, label=cond, ms=5, capsize=2)
        tgt = sub[sub["is_target"]]
        ax.scatter(tgt["mi"], 1 - tgt["error"], s=140, facecolors="none",
                   edgecolors=PALETTE.get(cond, "grey"), linewidths=2)
    _own_floor_marks(ax, strata, accuracy=True)
    h = float(strata["h_y"].max())
    k = int(strata["classes"].max())
    grid = np.linspace(0, h, 120)
    floor = [fano.fano_min_error_given_mi(i, h, k) for i in grid]
    ax.plot(grid, 1 - np.asarray(floor), "k--", lw=1,
            label=f"Fano: highest accuracy at I for the largest H(Y|stratum) (H = {h:.2f}, K = {k})")
    ax.axhline(1 / k, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("Î(Z; Y | stratum)  [nats]")
    ax.set_ylabel("accuracy of the model's answers")
    ax.set_title("Information in Z vs what the model answered (circled: held-out target)", fontsize=10)
    _legend_outside(ax, fontsize=7)
    return fig


def mi_vs_accuracy(strata: pd.DataFrame, path: Path) -> str:
    """Scatter: per (checkpoint, stratum), Î(Z;Y|stratum) against the model's accuracy there."""
    _save(draw_mi_vs_accuracy(strata), path)
    return ("Each point is one (M, A, T) stratum of one checkpoint: x = estimated information about the "
            "answer in Z (with interval), y = the model's accuracy. Each point's black dash is the highest "
            "accuracy Fano allows at its Î for its own stratum's H(Y|s) and K: Fano forbids a point above its "
            "dash (with the answer a function of Z); the dashed curve is that ceiling for the largest "
            "H(Y|stratum), so a stratum of smaller H can sit above the curve and below its own dash. Points "
            "far below their dash mean Z holds information the model's answer head does not use.")


def _own_floor_marks(ax, strata: pd.DataFrame, accuracy: bool) -> None:
    """Each stratum's own Fano floor at its Î (the check's `error_floor`, for its own H(Y|s) and K),
    as a black dash: strata of smaller H than the curve's have lower floors, and a point under the
    one curve was read as contradicting Fano where its own floor was met (a study: 26 of 96 points)."""
    rows = strata.dropna(subset=["mi", "error_floor"])
    if rows.empty:
        return
    y = 1 - rows["error_floor"] if accuracy else rows["error_floor"]
    ax.scatter(rows["mi"], y, marker="_", s=160, color="black", linewidths=1.6, zorder=3,
               label="the stratum's own " + ("highest accuracy" if accuracy else "floor") + " at Î (its H, K)")


def draw_fano_curve(strata: pd.DataFrame):
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    h = float(strata["h_y"].max())
    k = int(strata["classes"].max())
    grid = np.linspace(0, h, 160)
    ax.plot(grid, [fano.fano_min_error_given_mi(i, h, k) for i in grid], "k-", lw=1.4,
            label="Fano floor ε_min(I) for the largest H(Y|stratum)")
    _own_floor_marks(ax, strata, accuracy=False)
    for cond, sub in strata.groupby("condition"):
        ax.errorbar(sub["mi"], sub["error"],
                    yerr=np.clip(np.vstack([sub["error"] - sub["err_low"], sub["err_high"] - sub["error"]]), 0, None),
                    fmt="o", color=PALETTE.get(cond, "grey"), alpha=0.75, ms=5, capsize=2,
                    label=f"{cond}: observed error at Î")
    ax.set_xlabel("I(Z; Y | stratum)  [nats]")
    ax.set_ylabel("error ε")
    ax.set_ylim(0, 1)
    ax.set_title(f"Fano's inequality (curve: K = {k}, H(Y|stratum) = {h:.2f} nats)")
    _legend_outside(ax, fontsize=7)
    return fig


def fano_curve(strata: pd.DataFrame, path: Path) -> str:
    """Fano's error floor against I, with observed errors and the MI estimates' floors."""
    _save(draw_fano_curve(strata), path)
    return ("The solid curve is the smallest error Fano's inequality allows for a given information "
            "(H(Y|X) ≤ h(ε) + ε ln(K−1), Cover & Thomas Thm 2.10.1). Each point is a stratum's observed "
            "error (95% Clopper–Pearson bar) at its MI estimate, and its black dash the floor for its own "
            "stratum's H(Y|s) and K (the check table's floor); the curve is drawn for the largest H(Y|stratum), "
            "so only a point below its own dash would contradict Fano given Î (the estimate would then be "
            "too low).")


def draw_pac_bounds(pac: pd.DataFrame):
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    names = list(dict.fromkeys(pac["checkpoint"]))
    x = np.arange(len(names))
    markers = {"test-set": "s", "paper": "^", "Hoeffding": "v", "PAC-Bayes": "D", "Occam": "P"}
    observed = pac.drop_duplicates("checkpoint").set_index("checkpoint").reindex(names)
    ax.errorbar(x, observed["error"], yerr=np.clip(np.vstack([observed["error"] - observed["err_low"],
                observed["err_high"] - observed["error"]]), 0, None), fmt="o", color="black",
                capsize=3, label="observed held-out error (95% CI)")
    for bound, sub in pac.dropna(subset=["bound"]).groupby("bound"):
        sub = sub.set_index("checkpoint").reindex(names)
        key = next((k for k in markers if k.lower() in bound.lower()), None)
        ax.scatter(x, np.minimum(sub["value"], 1.05), marker=markers.get(key, "x"), s=40, label=bound)
    ax.axhline(1.0, color="red", lw=0.8, ls=":", label="vacuous above 1")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("risk (error rate)")
    ax.set_ylim(0, 1.1)
    ax.set_title("PAC bounds vs observed held-out error")
    _legend_outside(ax, fontsize=6.5)
    return fig


def pac_bounds(pac: pd.DataFrame, path: Path) -> str:
    """Observed held-out error against the PAC bounds per checkpoint (vacuous ones marked at 1)."""
    _save(draw_pac_bounds(pac), path)
    return ("Per checkpoint: the observed error on its held-out rows (black; which rows: the table's "
            "\"held-out rows\") and the bounds on the true risk. Bounds ≥ 1 are vacuous (drawn at the top). The test-set bound (binomial "
            "tail inversion on held-out answers) is the one that can say something; bounds from the "
            "training error and the parameter count cannot for a model of any size.")


RELATION_COLOURS = {"target": "#e6ab02", "related": PALETTE["Related"], "unrelated": PALETTE["Unrelated"],
                    "zero-overlap": PALETTE["Zero-overlap"]}


def _several_targets(counts: pd.DataFrame) -> list[str]:
    """The held-out targets of a composition frame with a `target` column (render.composition_by_target)
    when it has more than one; else []."""
    targets = list(dict.fromkeys(counts["target"])) if "target" in counts else []
    return targets if len(targets) > 1 else []


def draw_composition(counts: pd.DataFrame):
    """Samples per triplet, coloured by relation to the held-out target; with a `target` column of
    several targets (render.composition_by_target), one panel per target (`draw_composition_panels`)."""
    if _several_targets(counts):
        return draw_composition_panels(counts)
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(counts) + 1.4))
    colors = RELATION_COLOURS
    labels = [f"{m} / {a} / {t}" for m, a, t in zip(counts["modality"], counts["anatomy"], counts["task"])]
    ax.barh(labels, counts["n"], color=[colors.get(r, "grey") for r in counts["relation"]])
    for i, (n, rel) in enumerate(zip(counts["n"], counts["relation"])):
        ax.text(n, i, f" {n} ({rel})", va="center", fontsize=8)
    ax.set_xlabel("samples")
    ax.invert_yaxis()
    ax.set_xlim(0, counts["n"].max() * 1.45)
    ax.set_title("Dataset composition per (M, A, T)")
    return fig


def composition_label(n: int, relation: str, other_target: bool) -> str:
    """A bar's label in the composition figure: the count and the relation to the panel's target;
    a triplet other checkpoints of the run hold out says so."""
    return f" {n} ({relation}; another held-out target)" if other_target else f" {n} ({relation})"


def draw_composition_panels(counts: pd.DataFrame):
    """One panel per held-out target, the triplets in the same rows in every panel: colour and label give
    each triplet's relation to that panel's target; a triplet another target's checkpoints hold out is
    hatched and labelled so."""
    sns.set_theme(style="whitegrid")
    targets = _several_targets(counts)
    rows = int((counts["target"] == targets[0]).sum())
    fig, axes = plt.subplots(1, len(targets), figsize=(4.8 * len(targets) + 2.4, 0.45 * rows + 1.8),
                             sharey=True, squeeze=False)
    top = counts["n"].max()
    for ax, target in zip(axes[0], targets):
        sub = counts[counts["target"] == target]
        other = sub["other_target"].astype(bool) if "other_target" in sub else pd.Series(False, index=sub.index)
        labels = [f"{m} / {a} / {t}" for m, a, t in zip(sub["modality"], sub["anatomy"], sub["task"])]
        bars = ax.barh(labels, sub["n"], color=[RELATION_COLOURS.get(r, "grey") for r in sub["relation"]],
                       edgecolor=["black" if o else "none" for o in other], linewidth=0.8)
        for bar, o in zip(bars, other):
            if o:
                bar.set_hatch("//")
        for i, (n, rel, o) in enumerate(zip(sub["n"], sub["relation"], other)):
            ax.text(n, i, composition_label(n, rel, bool(o)), va="center", fontsize=7)
        ax.set_xlabel("samples")
        ax.set_xlim(0, top * 2.2)
        ax.set_title(f"relation to held-out target\n{target}", fontsize=9)
    axes[0][0].invert_yaxis()  # the panels share the y axis: inverted once
    fig.suptitle("Dataset composition per (M, A, T), one panel per held-out target", fontsize=10)
    fig.tight_layout()
    return fig


def composition(counts: pd.DataFrame, path: Path) -> str:
    """Samples per (M, A, T) triplet, coloured by its relation to the held-out target (one panel per
    target where `counts` holds several: render.composition_by_target)."""
    _save(draw_composition(counts), path)
    targets = _several_targets(counts)
    if targets:
        return (f"Samples per Modality / Anatomy / Task triplet, one panel per held-out target ({len(targets)}: "
                f"{'; '.join(targets)}); in each panel colour and label give each triplet's relation to that "
                "panel's target, the one its checkpoints hold out (CrossMed §III: related shares two of M, A, T; "
                "unrelated at most one, so a zero-overlap triplet, sharing none, is unrelated too and Unrelated "
                "training takes it), and a hatched bar labelled \"another held-out target\" is a triplet "
                "that other checkpoints of this run hold out: this panel's checkpoints still train on it under "
                "the condition its relation names.")
    return ("Samples per Modality / Anatomy / Task triplet; colour and label give each triplet's relation "
            "to the held-out target (CrossMed §III: related shares two of M, A, T; unrelated at most one, so a "
            "zero-overlap triplet, sharing none, is unrelated too and Unrelated training takes it).")
