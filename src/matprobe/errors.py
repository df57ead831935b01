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


class EstimationError(MatprobeError):
    """Inputs to an MI estimator are unusable (too few samples, NaN, one class, ...)."""


class BoundsError(MatprobeError):
    """A bound's parameters are outside their domain (eps not in [0, 1], K < 2, ...)."""


class StatsError(MatprobeError):
    """Results for a significance test are unpaired, missing or too few."""


class UnitError(MatprobeError, ValueError):
    """An information unit other than nats or bits (a ValueError too, as it was before)."""
