"""A controlled benchmark with known truth: smooth random fields advected and diffused on a periodic grid.

One scalar field u(x, y, t) on an n x n periodic grid (cell size 1, one frame per time step dt = 1)
obeys, mode by mode in Fourier space (k = 2 pi m / n, |m| <= n/2),

    u_hat(k, t+1) = exp(-i k.c(t) - nu |k|^2) u_hat(k, t) + b(k) xi(k, t)

that is the exact one-step solution of du/dt + c(t).grad u = nu lap u (c constant over a step),
plus a stochastic forcing that keeps the field statistically stationary: xi is the Fourier
transform of white N(0, 1) noise, b(k) = a(k) sqrt(1 - exp(-2 nu |k|^2)), and the first frame is
drawn from the stationary state a(k) xi. The spectrum a(k)^2 ~ exp(-(|m| / m0)^2) for
1 <= |m| <= m_max (zero mean, band-limited well below the grid's Nyquist), scaled so that u has
variance 1 at every point. The velocity c(t) (cells per step) is an Ornstein-Uhlenbeck process
around a mean drift, so a forecaster must read it from the input frames.

Known truth: frames.npy holds the clean field; velocity.npy the velocity of every step; meta.json's
`truth` the expected mean-squared error of the oracle forecast (exact state and future velocities
known, forcing unknown) per lead time, a floor no forecaster beats in expectation. With
`input_noise > 0`, inputs.npy holds noisy observations frames + input_noise * N(0, 1) (one fixed
realisation per frame) and meta["input_frames"] = "inputs.npy": a loader that honours it reads the
input frames of a window from inputs.npy and the targets from frames.npy, so targets stay clean.
Normalisation statistics come from the clean train frames. See docs/synthetic.md.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from svqbench.config import PAPER_BASE, QUICK
from svqbench.data import DatasetSpec
from svqbench.data.prepared import SPLITS, PreparedWriter
from svqbench.models import ForecastShape

NAME = "synthetic-advection"
IN_LEN, OUT_LEN = 10, 10
FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}  # contiguous blocks in this order


class Simulation(NamedTuple):
    frames: np.ndarray    # (N, n, n) float32, the clean field
    velocity: np.ndarray  # (N - 1, 2) float64: (c_x, c_y) in cells per step used from frame t to t + 1
    amplitude: np.ndarray  # a(k) on the rfft2 grid (stationary standard deviation of each mode, in FFT units)


def wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(k_y, k_x) in radians per cell on the rfft2 layout of an n x n grid: shapes (n, 1) and (1, n//2+1)."""
    return 2 * np.pi * np.fft.fftfreq(n)[:, None], 2 * np.pi * np.fft.rfftfreq(n)[None, :]


def propagator(n: int, *, velocity: tuple[float, float], nu: float, dt: float = 1.0) -> np.ndarray:
    """exp((-i k.c - nu |k|^2) dt) on the rfft2 grid: the exact solution operator of
    du/dt + c.grad u = nu lap u over dt. c = (c_x, c_y): c_x moves along the last axis."""
    ky, kx = wavenumbers(n)
    return np.exp((-1j * (kx * velocity[0] + ky * velocity[1]) - nu * (kx ** 2 + ky ** 2)) * dt)


def advect_diffuse(u: np.ndarray, *, velocity: tuple[float, float], nu: float, dt: float = 1.0) -> np.ndarray:
    """Field(s) (..., n, n) after dt of advection by constant `velocity` and diffusion `nu` (periodic)."""
    n = u.shape[-1]
    return np.fft.irfft2(np.fft.rfft2(u) * propagator(n, velocity=velocity, nu=nu, dt=dt), s=u.shape[-2:])


def spectrum(n: int, *, m0: float, m_max: int) -> np.ndarray:
    """a(k) on the rfft2 grid, scaled so that a field a(k) xi has unit variance per grid point."""
    my, mx = np.fft.fftfreq(n, 1 / n)[:, None], np.fft.fftfreq(n, 1 / n)[None, :]  # integer modes, full grid
    m = np.hypot(mx, my)
    power = np.where((m >= 1) & (m <= m_max), np.exp(-(m / m0) ** 2), 0.0)
    power *= n * n / power.sum()  # E[u^2] = sum over the full grid of a^2 / n^2 = 1
    return np.sqrt(power)[:, : n // 2 + 1]


def simulate(*, n_frames: int, n: int = 32, seed: int = 0, nu: float = 0.02, drift: tuple[float, float] = (0.5, 0.25),
             velocity_std: float = 0.3, velocity_time: float = 200.0, m0: float = 3.0, m_max: int = 8) -> Simulation:
    """The clean frames of the forced advection-diffusion process (module docstring)."""
    if m_max >= n // 2:
        raise ValueError(f"m_max {m_max} must stay below the Nyquist mode {n // 2}")
    rng = np.random.default_rng(seed)
    ky, kx = wavenumbers(n)
    k2 = kx ** 2 + ky ** 2
    a = spectrum(n, m0=m0, m_max=m_max)
    b = a * np.sqrt(1.0 - np.exp(-2.0 * nu * k2))
    rho = np.exp(-1.0 / velocity_time)
    velocity = np.empty((n_frames - 1, 2))
    dev = rng.normal(0.0, velocity_std, 2)  # stationary start of the OU process
    for t in range(n_frames - 1):
        velocity[t] = np.asarray(drift) + dev
        dev = rho * dev + np.sqrt(1 - rho ** 2) * velocity_std * rng.normal(size=2)
    white = rng.standard_normal((n_frames, n, n))
    xi = np.fft.rfft2(white)  # Hermitian-symmetric complex noise, E|xi|^2 = n^2
    damp = np.exp(-nu * k2)
    phase = np.exp(-1j * (velocity[:, 0, None, None] * kx + velocity[:, 1, None, None] * ky)) * damp
    u_hat = np.empty((n_frames, n, n // 2 + 1), dtype=np.complex128)
    u_hat[0] = a * xi[0]
    for t in range(n_frames - 1):
        u_hat[t + 1] = phase[t] * u_hat[t] + b * xi[t + 1]
    return Simulation(np.fft.irfft2(u_hat, s=(n, n)).astype(np.float32), velocity, a)


def oracle_mse_by_lead(amplitude: np.ndarray, *, n: int, nu: float, out_len: int) -> list[float]:
    """Expected per-point squared error of the forecast that knows the state and the velocities and
    sets the future forcing to zero: sum_k a^2 (1 - exp(-2 nu |k|^2 L)) / n^2 at lead L."""
    ky, kx = wavenumbers(n)
    k2 = kx ** 2 + ky ** 2
    weight = np.full(k2.shape, 2.0)  # rfft2 keeps half the plane: columns 1..n/2-1 stand for two modes
    weight[:, 0] = 1.0
    if n % 2 == 0:
        weight[:, -1] = 1.0
    return [float((weight * amplitude ** 2 * (1 - np.exp(-2 * nu * k2 * lead))).sum() / n ** 2)
            for lead in range(1, out_len + 1)]


def split_windows(n_frames: int, length: int) -> dict[str, np.ndarray]:
    """Start frames of every window of `length` frames lying entirely inside its contiguous block."""
    edges = np.round(np.cumsum([0] + [FRACTIONS[s] for s in SPLITS]) * n_frames).astype(int)
    return {s: np.arange(edges[i], max(edges[i], edges[i + 1] - length + 1), dtype=np.int64)
            for i, s in enumerate(SPLITS)}


def prepare(dest: Path, *, seed: int = 0, n_frames: int = 5000, grid: int = 32, nu: float = 0.02,
            drift: tuple[float, float] = (0.5, 0.25), velocity_std: float = 0.3, velocity_time: float = 200.0,
            m0: float = 3.0, m_max: int = 8, input_noise: float = 0.0,
            in_len: int = IN_LEN, out_len: int = OUT_LEN) -> Path:
    """Write the synthetic dataset to `dest` (module docstring; defaults are the documented benchmark)."""
    if input_noise < 0:
        raise ValueError(f"input_noise must be >= 0, got {input_noise}")
    sim = simulate(n_frames=n_frames, n=grid, seed=seed, nu=nu, drift=drift, velocity_std=velocity_std,
                   velocity_time=velocity_time, m0=m0, m_max=m_max)
    frames = sim.frames[:, None]
    windows = split_windows(n_frames, in_len + out_len)
    params = dict(seed=seed, n_frames=n_frames, grid=grid, nu=nu, drift=list(drift), velocity_std=velocity_std,
                  velocity_time=velocity_time, m0=m0, m_max=m_max, input_noise=input_noise, dt=1.0)
    by_lead = oracle_mse_by_lead(sim.amplitude, n=grid, nu=nu, out_len=out_len)
    meta = dict(
        name=Path(dest).name, kind="weather", channels=["u"], units=["1"], in_len=in_len, out_len=out_len,
        description="smooth random field advected by a slowly varying velocity and diffused on a periodic "
                    "grid, stochastically forced (docs/synthetic.md)",
        step="1 step", grid={"x": list(range(grid)), "y": list(range(grid)), "periodic": True},
        times=list(range(n_frames)),
        splits={s: {"frames": [int(w[0]), int(w[-1]) + in_len + out_len - 1] if len(w) else [],
                    "rule": "contiguous blocks (70/15/15 %), windows lie entirely inside the block"}
                for s, w in windows.items()},
        synthetic=params, input_noise_std=input_noise,
        truth={"oracle_mse_by_lead": by_lead, "oracle_mse": float(np.mean(by_lead)),
               "note": "expected MSE of the forecast knowing the exact state and velocities (forcing unknown)"},
        frames_sha256=hashlib.sha256(frames.tobytes()).hexdigest(),
        sources=[{"generator": "svqbench.data.synthetic", "seed": seed}],
    )
    with PreparedWriter(dest, len(frames), 1, (grid, grid)) as writer:
        writer.write(0, frames, source=meta["name"])
        np.save(writer.tmp / "velocity.npy", sim.velocity)
        if input_noise > 0:
            noise = np.random.default_rng([seed, 1]).standard_normal(frames.shape).astype(np.float32)
            np.save(writer.tmp / "inputs.npy", frames + np.float32(input_noise) * noise)
            meta["input_frames"] = "inputs.npy"
        return writer.finish(windows, meta)


def frames_digest(path: str | os.PathLike) -> str:
    """sha256 of the clean frames' bytes of a prepared synthetic dataset (equals meta["frames_sha256"])."""
    return hashlib.sha256(np.ascontiguousarray(np.load(Path(path) / "frames.npy")).tobytes()).hexdigest()


SYNTHETIC_ADVECTION = DatasetSpec(
    NAME, prepare,
    # stationary zero-mean field: global normalisation; the quick scale trains a few minutes on 2 cores
    {"paper": dict(PAPER_BASE, backbone="gsta", norm="global", epochs=50),
     "quick": dict(QUICK, backbone="gsta", norm="global", epochs=8, warmup_epochs=1, patience=3, lr=5e-3)},
    ForecastShape(IN_LEN, OUT_LEN, 1, 32, 32),
    "synthetic advection-diffusion on a 32 x 32 periodic grid, known truth, 10 -> 10 (docs/synthetic.md)")
