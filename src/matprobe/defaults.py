"""One set of defaults for the CLI, the Python API and the pipeline.

The same store gives the same numbers whichever entry point reads it only if every
entry point starts from the same settings; this object is where they live. Results
record the settings they were computed with (seeds, folds, pca, level, unit).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Defaults:
    estimator: str = "probe"
    seeds: int = 5          # seeds per MI estimate
    folds: int = 5          # cross-fitting folds
    pca: int | None = 64    # PCA dims, label-free: fitted once on every row (None = none)
    seed: int = 0           # base seed of fold assignment and critics
    level: float = 0.95     # level of every interval (MI, errors, differences, correlations)
    unit: str = "nats"      # information unit shown (computation is always in nats)
    delta: float = 0.05     # failure probability of PAC / finite-sample bounds
    pool: str = "last"
    n_boot: int = 2000      # bootstrap resamples (differences, correlations, test statistics)
    mi_n_boot: int = 300    # row-bootstrap resamples of an MI interval (per stratum; widened by the seed spread)
    min_stratum: int = 30   # MI strata with fewer rows are reported as sparse
    factors: tuple[str, ...] = ("M", "A", "T")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULTS = Defaults()
