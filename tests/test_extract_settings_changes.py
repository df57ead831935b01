"""`run` names every store made with other [extract] settings in one line before extracting (a
study changed `max_pixels` and was refused one store per run, five runs). max_pixels is compared as
it was asked (the store's extract request: None is the processor's own limit), or where a store
records no request, as the limit it ran at."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from matprobe.errors import ProvenanceMismatch
from matprobe.extract.preflight import settings_differences
from matprobe.preflight import _check_run_stores
from matprobe.store import EmbeddingStore

BASE = {"pools": ["last"], "dtype": "fp32", "device_type": "cpu", "num_decoder_layers": 3, "layers": ["2"],
        "max_pixels": 12845056}


@pytest.mark.parametrize("request_, asked, expected", [
    ({"max_pixels": None}, None, []),
    ({"max_pixels": None}, 50176, [("max_pixels", "none (the processor's own)", "50176")]),
    ({"max_pixels": 50176}, None, [("max_pixels", "50176", "none (the processor's own)")]),
    ({"max_pixels": 50176}, 50176, []),
    (None, 50176, [("max_pixels", "12845056", "50176")]),  # no request recorded: the limit it ran at
    (None, 12845056, []),
    (None, None, []),  # nothing to compare None with
])
def test_max_pixels_as_asked(request_, asked, expected):
    prov = dict(BASE, **({"extract_request": request_} if request_ is not None else {}))
    assert settings_differences(prov, max_pixels=asked) == expected
    assert settings_differences(prov) == []  # not asked about: not compared


def test_the_run_names_every_store_whose_max_pixels_differs_at_once(tmp_path):
    stores = tmp_path / "run" / "stores"
    stores.mkdir(parents=True)
    for name, asked in (("related-s0", None), ("related-s1", None), ("unrelated-s0", 50176)):
        EmbeddingStore.from_arrays(stores / f"{name}.h5", ["a", "b"], {"task": ["x", "y"]},
                                   {("2", "last"): np.zeros((2, 4), np.float32)},
                                   provenance={**BASE, "extract_request": {"max_pixels": asked}}).close()
    cfg = SimpleNamespace(out=str(tmp_path / "run"), checkpoints=[{"name": n, "ckpt": "x"} for n in
                                                                  ("related-s0", "related-s1", "unrelated-s0")],
                          dtype="fp32", device="cpu", layers="2", rendering="multi-image", max_pixels=50176)
    with pytest.raises(ProvenanceMismatch) as err:
        _check_run_stores(cfg, ["last"])
    said = str(err.value)
    assert ("2 of its stores were extracted with other settings, which their resume would refuse: related-s0.h5, "
            "related-s1.h5 ([extract] max_pixels \"none (the processor's own)\" stored, '50176' asked)") in said, said
    _check_run_stores(SimpleNamespace(**{**vars(cfg), "checkpoints": cfg.checkpoints[2:]}), ["last"])


def test_a_complete_store_holding_more_layers_and_pools_than_asked_is_not_refused(tmp_path):
    stores = tmp_path / "run" / "stores"
    stores.mkdir(parents=True)
    prov = {**BASE, "layers": ["1", "2"], "pools": ["last", "image"], "extract_request": {"max_pixels": None}}
    EmbeddingStore.from_arrays(stores / "related-s0.h5", ["a", "b"], {"task": ["x", "y"]},
                               {(layer, pool): np.zeros((2, 4), np.float32) for layer in ("1", "2")
                                for pool in ("last", "image")}, provenance=prov).close()
    cfg = SimpleNamespace(out=str(tmp_path / "run"), checkpoints=[{"name": "related-s0", "ckpt": "x"}],
                          dtype="fp32", device="cpu", layers="-1", rendering="multi-image", max_pixels=None)
    _check_run_stores(cfg, ["last"])  # layer 2 (the last of 3 blocks) and pool last: both stored
    with pytest.raises(ProvenanceMismatch, match=r"layers '1,2' stored, '0,2' asked"):
        _check_run_stores(SimpleNamespace(**{**vars(cfg), "layers": "0,-1"}), ["last"])
    assert settings_differences(prov, layers="-1", pools=["last"]) == [("pools", "last,image", "last"),
                                                                       ("layers", "1,2", "2")]
