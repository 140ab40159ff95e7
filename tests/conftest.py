"""Shared fixtures: a prepared copy of the embedded dataset and tiny configs that train in seconds."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from svqbench.config import resolve

# A SimVP small enough to train a few epochs on 2 cores in seconds.
TINY = dict(hid_s=8, hid_t=16, n_t=2, n_s=2, mlp_ratio=2.0, epochs=2, batch_size=32, codebook_size=64,
            warmup_epochs=0, patience=5)


@pytest.fixture(scope="session")
def embedded_root(tmp_path_factory) -> Path:
    """The embedded dataset prepared once per test session (read-only for tests)."""
    from svqbench.data import prepare
    root = tmp_path_factory.mktemp("data")
    prepare("embedded", root=root)
    return root


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """scaling_data's 8 x 8 drifting waves (saved as `embedded`), prepared once per test module."""
    from scaling_data import make_tiny_dataset
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_dataset(root)
    return root


@pytest.fixture
def data_root(embedded_root, tmp_path) -> Path:
    """A private, writable copy of the prepared data root."""
    dst = tmp_path / "data"
    shutil.copytree(embedded_root, dst)
    return dst


@pytest.fixture
def tiny_config():
    def make(**overrides):
        # TINY's codebook size is for the quantizers that have one; `--codebook-size` with `none` is refused
        from svqbench.quantizers import quantizer_spec
        reads = quantizer_spec(overrides.get("quantizer", "svq")).reads
        tiny = {k: v for k, v in TINY.items() if k != "codebook_size" or k in reads}
        return resolve(cli={**tiny, **overrides})
    return make
