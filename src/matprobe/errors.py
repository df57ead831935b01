"""Errors a user can fix. The CLI prints their message as one line; no traceback.

Messages name the file, the record and the fix, e.g.
``data.jsonl: record 17 (id 'ct-003'): unknown modality 'CTX'; use one of CT, MRI, X-ray``.
"""

from __future__ import annotations


class MatprobeError(Exception):
    """Base class for errors caused by input the user can correct."""


class DataError(MatprobeError):
    """A dataset file, record or image is missing, malformed or inconsistent."""


class StoreError(MatprobeError):
    """An HDF5 store is missing, corrupt, or does not match what was asked of it."""


class ProvenanceMismatch(StoreError):
    """Appending to (or comparing) a store made under different provenance."""


class ExtractError(MatprobeError):
    """A checkpoint, adapter, layer choice or device setting cannot be used."""


class ItemRefused(ExtractError):
    """A prompt builder refuses one item of a batch (too long, too many images); `position` is its
    place in the batch, so the caller names the item by its id."""

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.position = position


class EstimationError(MatprobeError):
    """Inputs to an MI estimator are unusable (too few samples, NaN, one class, ...)."""


class BoundsError(MatprobeError):
    """A bound's parameters are outside their domain (eps not in [0, 1], K < 2, ...)."""


class StatsError(MatprobeError):
    """Results for a significance test are unpaired, missing or too few."""


class UnitError(MatprobeError, ValueError):
    """An information unit other than nats or bits (a ValueError too, as it was before)."""



class ConfigError(MatprobeError):
    """A configuration file or option names a key or value that does not exist."""


class PipelineError(MatprobeError):
    """A pipeline file is malformed or names something that does not exist."""


class ReportError(MatprobeError):
    """A run directory lacks what the report needs."""


class InUseError(MatprobeError):
    """Another process is writing the same output."""


class LaunchError(MatprobeError):
    """The launcher's environment (WORLD_SIZE) and the process group disagree."""


class InitError(MatprobeError):
    """`matprobe init` cannot tell what a checkpoint is, or the target is not in the data."""


class StoreUnavailable(StoreError):
    """The store cannot be opened for a reason outside its content (a folder in its place, a
    file-size limit, a full disk); the message carries the fix, which is never --overwrite."""


class TooFewPairs(StatsError):
    """A comparison has fewer than two pairs for a metric (the automatic unit skips it)."""

    def __init__(self, message: str, n_pairs: int = 0, reason: str | None = None):
        super().__init__(message)
        self.n_pairs = n_pairs
        self.reason = reason  # why, in a few words, where it is not too few shared runs


class RunsSpelledApart(TooFewPairs):
    """Too few pairs because the two conditions write their runs apart (seeds numbered apart, a
    target written two ways): the fix is the spelling, not more seeds."""
