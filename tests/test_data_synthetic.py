"""The synthetic advection-diffusion benchmark: determinism, layout, physics, input-only noise."""
from __future__ import annotations

import json

import numpy as np
import pytest

from svqbench.data.prepared import PreparedDataset
from svqbench.data.synthetic import (advect_diffuse, frames_digest, oracle_mse_by_lead, prepare, simulate, spectrum,
                                     wavenumbers)


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("syn") / "synthetic-advection", seed=0)


def _smooth_field(n=32, seed=1):
    a = spectrum(n, m0=3.0, m_max=8)
    xi = np.fft.rfft2(np.random.default_rng(seed).standard_normal((n, n)))
    return np.fft.irfft2(a * xi, s=(n, n))


def test_layout_and_window_counts(default):
    ds = PreparedDataset(default)
    assert ds.frames.shape == (5000, 1, 32, 32) and ds.frames.dtype == np.float32
    assert (ds.in_len, ds.out_len) == (10, 10)
    # blocks 0-3499, 3500-4249, 4250-4999; every window of 20 frames inside its block
    assert {s: len(w) for s, w in ds.splits.items()} == {"train": 3481, "val": 731, "test": 731}
    assert ds.meta["windows"] == {"train": 3481, "val": 731, "test": 731}
    for split, (first, last) in {"train": (0, 3499), "val": (3500, 4249), "test": (4250, 4999)}.items():
        w = ds.splits[split]
        assert w.min() == first and w.max() + 19 == last and np.all(np.diff(w) == 1)
    batch = next(ds.batches("test", 4))
    assert batch.x.shape == (4, 10, 1, 32, 32) and batch.y.shape == (4, 10, 1, 32, 32)
    assert not (default / "inputs.npy").exists() and "input_frames" not in ds.meta


def test_deterministic_for_a_seed(default, tmp_path):
    meta = json.loads((default / "meta.json").read_text())
    assert frames_digest(default) == meta["frames_sha256"]
    again = prepare(tmp_path / "a", seed=0)
    assert frames_digest(again) == frames_digest(default)
    np.testing.assert_array_equal(np.load(again / "velocity.npy"), np.load(default / "velocity.npy"))
    assert frames_digest(prepare(tmp_path / "b", seed=1)) != frames_digest(default)


def test_field_is_stationary_with_unit_variance(default):
    frames = np.load(default / "frames.npy")[:, 0].astype(np.float64)
    np.testing.assert_allclose(frames.mean(axis=(1, 2)), 0.0, atol=1e-6)  # no mean mode
    # every block, not only the whole record: the forcing keeps the field from decaying
    for part in np.array_split(frames, 5):
        assert 0.7 < part.var() < 1.3
    assert abs(frames[:, 0, 0].std() - frames[:, 16, 20].std()) < 0.3


def test_advection_is_a_periodic_shift():
    u = _smooth_field()
    # an integer shift by c * dt = (3, -2) cells: x (last axis) by 3, y by -2
    np.testing.assert_allclose(advect_diffuse(u, velocity=(1.5, -1.0), nu=0.0, dt=2.0),
                               np.roll(u, (-2, 3), axis=(0, 1)), atol=1e-12)
    # half a cell twice is one cell (band-limited field: exact up to rounding)
    half = advect_diffuse(advect_diffuse(u, velocity=(0.5, 0.0), nu=0.0), velocity=(0.5, 0.0), nu=0.0)
    np.testing.assert_allclose(half, np.roll(u, 1, axis=1), atol=1e-12)
    # a sine moved by a fractional distance equals the sine evaluated at x - c t
    x = np.arange(32)[None, :] * np.ones((32, 1))
    k = 2 * np.pi * 3 / 32
    np.testing.assert_allclose(advect_diffuse(np.sin(k * x), velocity=(0.37, 5.0), nu=0.0),
                               np.sin(k * (x - 0.37)), atol=1e-12)


def test_diffusion_decays_energy_at_the_predicted_rate():
    y = np.arange(32)[:, None] * np.ones((1, 32))
    k = 2 * np.pi * 4 / 32
    nu, t = 0.1, 3.0
    out = advect_diffuse(np.cos(k * y), velocity=(0.3, 0.7), nu=nu, dt=t)
    assert (out ** 2).mean() / (np.cos(k * y) ** 2).mean() == pytest.approx(np.exp(-2 * nu * k ** 2 * t), rel=1e-10)
    # any field: the energy is sum |u_k|^2 exp(-2 nu |k|^2 t) (Parseval), advection leaves it alone
    u = _smooth_field()
    ky, kx = wavenumbers(32)
    full = np.fft.fft2(u)
    kyf, kxf = 2 * np.pi * np.fft.fftfreq(32)[:, None], 2 * np.pi * np.fft.fftfreq(32)[None, :]
    predicted = (np.abs(full) ** 2 * np.exp(-2 * nu * (kxf ** 2 + kyf ** 2) * t)).sum() / 32 ** 4
    assert (advect_diffuse(u, velocity=(0.3, 0.7), nu=nu, dt=t) ** 2).mean() == pytest.approx(predicted, rel=1e-10)
    assert (advect_diffuse(u, velocity=(0.3, 0.7), nu=0.0, dt=t) ** 2).mean() == pytest.approx((u ** 2).mean(),
                                                                                                   rel=1e-10)


def test_frames_follow_the_dynamics_and_the_oracle_floor():
    nu = 0.02
    sim = simulate(n_frames=1200, seed=4, nu=nu)
    u = sim.frames.astype(np.float64)
    # the stored velocities explain each step up to the forcing, whose variance is known
    step = np.stack([advect_diffuse(u[t], velocity=sim.velocity[t], nu=nu) for t in range(len(u) - 1)])
    forcing_var = oracle_mse_by_lead(sim.amplitude, n=32, nu=nu, out_len=1)[0]
    assert ((u[1:] - step) ** 2).mean() == pytest.approx(forcing_var, rel=0.05)
    # a wrong velocity explains far less: the velocity is in the frames
    wrong = np.stack([advect_diffuse(u[t], velocity=(0.0, 0.0), nu=nu) for t in range(len(u) - 1)])
    assert ((u[1:] - wrong) ** 2).mean() > 3 * forcing_var
    # oracle forecast over 10 leads matches its expected error
    lead = 10
    floor = oracle_mse_by_lead(sim.amplitude, n=32, nu=nu, out_len=lead)
    errs = []
    for s in range(0, len(u) - lead, 7):
        f = u[s]
        for t in range(lead):
            f = advect_diffuse(f, velocity=sim.velocity[s + t], nu=nu)
        errs.append(((f - u[s + lead]) ** 2).mean())
    assert np.mean(errs) == pytest.approx(floor[-1], rel=0.1)
    assert np.all(np.diff(floor) > 0) and floor[-1] < 1.0


def test_noise_only_on_inputs(default, tmp_path):
    noisy = prepare(tmp_path / "noisy", seed=0, input_noise=0.2)
    meta = json.loads((noisy / "meta.json").read_text())
    assert meta["input_frames"] == "inputs.npy" and meta["input_noise_std"] == 0.2
    clean = np.load(noisy / "frames.npy")
    inputs = np.load(noisy / "inputs.npy")
    # the targets (frames.npy) are exactly the clean field of the noiseless dataset
    assert frames_digest(noisy) == frames_digest(default)
    assert meta["stats"] == json.loads((default / "meta.json").read_text())["stats"]
    diff = (inputs - clean).astype(np.float64)
    assert inputs.shape == clean.shape and inputs.dtype == np.float32
    assert diff.std() == pytest.approx(0.2, rel=0.01) and abs(diff.mean()) < 0.005
    # white: no correlation between neighbouring frames
    assert abs(np.corrcoef(diff[:-1].ravel(), diff[1:].ravel())[0, 1]) < 0.01


def test_bad_options():
    with pytest.raises(ValueError):
        simulate(n_frames=10, n=16, m_max=8)
    with pytest.raises(ValueError):
        prepare("unused", input_noise=-0.1)
