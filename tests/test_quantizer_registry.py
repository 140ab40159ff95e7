"""A quantizer from outside the package: one file + one line, trained end to end; the config
reads exactly the fields it declares."""
from __future__ import annotations

import json

import pytest

from svqbench.config import resolve
from svqbench.errors import UserError
from svqbench.quantizers import _REGISTRY, quantizer_kwargs, quantizer_names, register_quantizer


@pytest.fixture
def toy():
    register_quantizer("toy-round", "plugins.toy_quantizer:RoundToGrid", reads={"codebook_size": "levels"})
    yield "toy-round"
    _REGISTRY.pop("toy-round")


def test_a_registered_quantizer_trains_end_to_end(toy, tiny_config, embedded_root, tmp_path):
    from svqbench.experiment import run_experiment
    assert toy in quantizer_names()
    cfg = tiny_config(quantizer=toy, codebook_size=4, epochs=1)
    assert quantizer_kwargs(cfg) == {"levels": 4}
    metrics = run_experiment(cfg, results_dir=tmp_path, data_dir=embedded_root, run_id="toy")
    assert metrics["status"] == "finished" and metrics["test"]["mae_per_pixel"] > 0
    assert json.loads((tmp_path / "toy" / "config.json").read_text())["config"]["quantizer"] == toy


def test_options_it_does_not_read_are_refused(toy):
    with pytest.raises(UserError, match="--svq-hidden applies to mlp and svq only, not --quantizer toy-round"):
        resolve(cli={"quantizer": toy, "svq_hidden": 64})
    with pytest.raises(UserError, match="--frozen-codebook applies to svq and svq-raw only"):
        resolve(cli={"quantizer": toy, "frozen_codebook": True})


def test_baselines_are_bound_by_name():
    """Each baseline name builds its own method, whatever the order of the registry."""
    from svqbench.quantizers import build_quantizer
    from svqbench.quantizers.methods import METHODS
    for name in METHODS:
        assert _REGISTRY[name].options == {"method": name}
        assert build_quantizer(name, dim=8, **quantizer_kwargs(resolve(cli={"quantizer": name}))).method == name
