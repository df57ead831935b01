"""Report figures (matplotlib/seaborn, PNG). Each function returns the caption of its figure.

Every figure is drawn from the run's JSON/CSV results alone, so a report can be rebuilt
from a run directory without recomputing anything.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CPU machines and CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from matprobe.theory import fano  # noqa: E402

PALETTE = {"Related": "#1b9e77", "Unrelated": "#d95f02", "Zero-overlap": "#7570b3",
           "Leave-one-out": "#e7298a"}


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mi_chain_bars(terms: pd.DataFrame, path: Path) -> str:
    """Bars: each chain term per checkpoint (grouped by condition), with 90% intervals."""
    sns.set_theme(style="whitegrid")
    layers = sorted(terms["layer_pool"].unique())
    fig, axes = plt.subplots(1, len(layers), figsize=(max(7, 5 * len(layers)), 4.2), squeeze=False)
    term_order = list(dict.fromkeys(terms["term"]))
    for ax, lp in zip(axes[0], layers):
        sub = terms[terms["layer_pool"] == lp]
        names = list(dict.fromkeys(sub.sort_values(["condition", "seed"])["checkpoint"]))
        width = 0.8 / max(1, len(names))
        x = np.arange(len(term_order))
        for i, name in enumerate(names):
            rows = sub[sub["checkpoint"] == name].set_index("term").reindex(term_order)
            cond = rows["condition"].dropna().iloc[0]
            err = np.vstack([rows["estimate"] - rows["ci_low"], rows["ci_high"] - rows["estimate"]])
            ax.bar(x + (i - (len(names) - 1) / 2) * width, rows["estimate"], width,
                   yerr=np.clip(err, 0, None), color=PALETTE.get(cond, "grey"),
                   alpha=0.55 + 0.45 * (i % 2), label=name, capsize=2)
        hmax = sub.groupby("term")["h_upper"].max().reindex(term_order)
        ax.scatter(x, hmax, marker="_", s=600, color="black", label="H upper limit", zorder=3)
        ax.set_xticks(x, [t.replace("I(Z;", "").rstrip(")") for t in term_order], rotation=20, ha="right")
        ax.set_ylabel("nats")
        ax.set_title(f"MI chain, layer/pool {lp}")
    axes[0][-1].legend(fontsize=7, ncol=2, loc="upper right")
    _save(fig, path)
    return ("Each chain term I(Z;M), I(Z;A|M), I(Z;T|M,A), I(Z;Y|M,A,T) per checkpoint (bars, colour = "
            "training condition) with its 90% interval; black ticks mark the plug-in entropy that caps "
            "each term. Read: which factor the embedding encodes most, and whether the conditions differ "
            "by more than their intervals.")


def mi_vs_accuracy(strata: pd.DataFrame, path: Path) -> str:
    """Scatter: per (checkpoint, stratum), Î(Z;Y|stratum) against the model's accuracy there."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for cond, sub in strata.groupby("condition"):
        ax.errorbar(sub["mi"], 1 - sub["error"],
                    xerr=np.clip(np.vstack([sub["mi"] - sub["mi_low"], sub["mi_high"] - sub["mi"]]), 0, None),
                    fmt="o", color=PALETTE.get(cond, "grey"), alpha=0.75, label=cond, ms=5, capsize=2)
        tgt = sub[sub["is_target"]]
        ax.scatter(tgt["mi"], 1 - tgt["error"], s=140, facecolors="none",
                   edgecolors=PALETTE.get(cond, "grey"), linewidths=2)
    h = float(strata["h_y"].max())
    k = int(strata["classes"].max())
    grid = np.linspace(0, h, 120)
    floor = [fano.fano_min_error_given_mi(i, h, k) for i in grid]
    ax.plot(grid, 1 - np.asarray(floor), "k--", lw=1, label=f"Fano: highest accuracy at I (H = {h:.2f}, K = {k})")
    ax.axhline(1 / k, color="grey", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("Î(Z; Y | stratum)  [nats]")
    ax.set_ylabel("accuracy of the model's answers")
    ax.set_title("Information in Z vs what the model answered (circled: held-out target)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)
    return ("Each point is one (M, A, T) stratum of one checkpoint: x = estimated information about the "
            "answer in Z (with interval), y = the model's accuracy. Fano forbids points above the dashed "
            "curve (with the answer a function of Z); points far below it mean Z holds information the "
            "model's answer head does not use.")


def fano_curve(strata: pd.DataFrame, path: Path) -> str:
    """Fano's error floor against I, with observed errors and the MI estimates' floors."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    h = float(strata["h_y"].max())
    k = int(strata["classes"].max())
    grid = np.linspace(0, h, 160)
    ax.plot(grid, [fano.fano_min_error_given_mi(i, h, k) for i in grid], "k-", lw=1.4,
            label="Fano floor ε_min(I)")
    for cond, sub in strata.groupby("condition"):
        ax.errorbar(sub["mi"], sub["error"],
                    yerr=np.clip(np.vstack([sub["error"] - sub["err_low"], sub["err_high"] - sub["error"]]), 0, None),
                    fmt="o", color=PALETTE.get(cond, "grey"), alpha=0.75, ms=5, capsize=2,
                    label=f"{cond}: observed error at Î")
    ax.set_xlabel("I(Z; Y | stratum)  [nats]")
    ax.set_ylabel("error ε")
    ax.set_ylim(0, 1)
    ax.set_title(f"Fano's inequality, K = {k}, H(Y|stratum) = {h:.2f} nats")
    ax.legend(fontsize=7)
    _save(fig, path)
    return ("The solid curve is the smallest error Fano's inequality allows for a given information "
            "(H(Y|X) ≤ h(ε) + ε ln(K−1), Cover & Thomas Thm 2.10.1). Each point is a stratum's observed "
            "error (95% Clopper–Pearson bar) at its MI estimate. Points below the curve would contradict "
            "Fano given Î (the estimate would then be too low).")


def pac_bounds(pac: pd.DataFrame, path: Path) -> str:
    """Observed held-out error against the PAC bounds per checkpoint (vacuous ones marked at 1)."""
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
    ax.set_title("PAC bounds vs observed error on the held-out target")
    ax.legend(fontsize=6.5, loc="center right")
    _save(fig, path)
    return ("Per checkpoint: the observed error on the held-out target triplet (black) and the bounds "
            "on the true risk. Bounds ≥ 1 are vacuous (drawn at the top). The test-set bound (binomial "
            "tail inversion on held-out answers) is the one that can say something; bounds from the "
            "training error and the parameter count cannot for a model of any size.")


def composition(counts: pd.DataFrame, path: Path) -> str:
    """Samples per (M, A, T) triplet, coloured by its relation to the held-out target."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(counts) + 1.4))
    colors = {"target": "#e6ab02", "related": PALETTE["Related"], "unrelated": PALETTE["Unrelated"],
              "zero-overlap": PALETTE["Zero-overlap"]}
    labels = [f"{m} / {a} / {t}" for m, a, t in zip(counts["modality"], counts["anatomy"], counts["task"])]
    ax.barh(labels, counts["n"], color=[colors.get(r, "grey") for r in counts["relation"]])
    for i, (n, rel) in enumerate(zip(counts["n"], counts["relation"])):
        ax.text(n, i, f" {n} ({rel})", va="center", fontsize=8)
    ax.set_xlabel("samples")
    ax.invert_yaxis()
    ax.set_xlim(0, counts["n"].max() * 1.45)
    ax.set_title("Dataset composition per (M, A, T)")
    _save(fig, path)
    return ("Samples per Modality / Anatomy / Task triplet; colour and label give each triplet's relation "
            "to the held-out target (CrossMed §III: related shares two of M, A, T; unrelated at most one).")
