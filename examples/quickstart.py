# %% [markdown]
# # matprobe quickstart
#
# How much of each image's Modality, Anatomy and Task an embedding Z holds, with the
# three-line API. Run it as a script (`python examples/quickstart.py [STORE.h5]`) or open
# it as a notebook (percent format: Jupytext, VS Code). Without a store it builds a small
# synthetic one whose Z carries the modality strongly, the anatomy less, the task least.

# %%
import sys
import tempfile
from pathlib import Path

import numpy as np

import matprobe as mp
from matprobe.store import EmbeddingStore


def synthetic_store(path: Path, n: int = 600, seed: int = 0) -> Path:
    """A store with M, A, T labels, a label column Y, the model's answers and one feature array."""
    rng = np.random.default_rng(seed)
    m = rng.choice(["CT", "MRI"], n)
    a = rng.choice(["Lung", "Brain"], n)
    t = rng.choice(["Classification", "Detection"], n)
    y = rng.integers(0, 2, n)
    z = rng.normal(size=(n, 8)).astype("float32")
    z[:, 0] += 2.0 * (m == "CT")
    z[:, 1] += 1.0 * (a == "Lung")
    z[:, 2] += 0.5 * (t == "Detection")
    z[:, 3] += 1.5 * y
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)  # a model right 80% of the time
    answers = {"pred": pred, "correct": (pred == y).astype("int8"), "probs": np.eye(2)[pred]}
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)],
                               {"modality": m, "anatomy": a, "task": t, "label": np.array(["no", "yes"])[y]},
                               {("4", "last"): z}, answers=answers).close()
    return path


store = Path(sys.argv[1]) if len(sys.argv) > 1 else synthetic_store(Path(tempfile.mkdtemp()) / "demo.h5")

# %% [markdown]
# ## The MI chain: I(Z;M) + I(Z;A|M) + I(Z;T|M,A), then I(Z;Y|M,A,T)
# Defaults (seeds, folds, PCA, 95% intervals) are `mp.DEFAULTS`, the same as `matprobe mi`.
# Y (the label) at the end of the chain gives I(Z;Y|M,A,T) per stratum, which `check` reuses.

# %%
chain = mp.mi(store, factors="M,A,T,Y", seeds=1)
print(mp.to_markdown(chain.to_table()))
terms = chain.frame().set_index("term")

# %% [markdown]
# ## Fano against the model's answers
# `check` uses the chain's I(Z;Y|M,A,T) (it estimates the term itself only when the MI results
# hold none), and says which Y it uses.

# %%
checked = mp.check(store, mi=chain, target="label")
print(checked.y_description)
print(mp.to_markdown(checked.to_table()))

# %% [markdown]
# ## A bound by hand

# %%
print(mp.to_markdown(mp.bounds.fano(error=0.2, classes=2, entropy=0.69).to_table()))
