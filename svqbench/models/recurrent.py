"""What the recurrent models (OpenSTL's ConvLSTM, PredRNN family, MIM, E3D-LSTM, MAU, ...) share:
patch reshaping, the teacher-forcing schedules, and the forecasting interface the loop calls.

Every forecasting model follows one interface (docs/models.md):

    model(x, *, target=None, step=None, generator=None) -> (pred, aux)

x (B, T_in, C, H, W) normalised inputs; target (B, T_out, C, H, W) the true future frames (training
only); step the global optimiser step (training only); generator a CPU torch.Generator the loop owns
and checkpoints, from which teacher-forcing masks are drawn. Evaluation passes none of them: the
model forecasts from the inputs alone. pred (B, T_out, C, H, W); aux a scalar tensor of extra
training loss (quantizer aux, decoupling loss, ...; 0 when none) that the loop adds to its loss.

A recurrent model subclasses `Recurrent` and implements `rollout(frames, mask)` exactly as the
reference's model forward does (frames in OpenSTL's patch layout, (B, T, H/p, W/p, p*p*C); mask the
teacher-forcing flags, (B, T_mask, H/p, W/p, p*p*C)), returning the T-1 next-frame predictions in
the same layout. `Recurrent` adds no parameters of its own except `quantizer` (none: no parameters),
so a model's state dict keeps the reference's attribute names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- patches (OpenSTL's reshape_patch)

def reshape_patch(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, C, H, W) -> OpenSTL's patch layout (B, T, H/p, W/p, p*p*C): channel (i*p + j)*C + c
    holds pixel (i, j) of each p x p patch, as the reference orders it (so its weights load)."""
    b, t, c, h, w = x.shape
    x = x.permute(0, 1, 3, 4, 2).reshape(b, t, h // patch, patch, w // patch, patch, c)
    return x.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, t, h // patch, w // patch, patch * patch * c)


def reshape_patch_back(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The inverse of `reshape_patch`: (B, T, H/p, W/p, p*p*C) -> (B, T, C, H, W)."""
    b, t, hp, wp, pc = x.shape
    c = pc // (patch * patch)
    x = x.reshape(b, t, hp, wp, patch, patch, c).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, hp * patch, wp * patch, c).permute(0, 1, 4, 2, 3)


def padded_size(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


def pad_frames(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """(..., C, H, W) -> the same with H and W edge-padded at the bottom/right to multiples of
    `multiple`, for a model whose patches or down-sampling need them (the embedded grid is 37 x 49).
    Edge values, not zeros: a zero in normalised units is the mean, a false edge for the convolutions."""
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, multiple) - h, padded_size(w, multiple) - w
    if ph == 0 and pw == 0:
        return x
    y = torch.nn.functional.pad(x.reshape(-1, *x.shape[-3:]), (0, pw, 0, ph), mode="replicate")
    return y.reshape(*x.shape[:-2], h + ph, w + pw)


# ---------------------------------------------------------------- teacher-forcing schedules

@dataclass(frozen=True)
class Sampling:
    """The reference's teacher-forcing settings (configs/<dataset>/<Model>.py).

    kind: "scheduled" (ConvLSTM, PredRNN, PredRNN++, MIM, E3D-LSTM, MAU), "reverse" (PredRNN.V2)
    or "none" (teacher forcing off: every future frame is the model's own prediction)."""
    kind: str = "scheduled"
    start_value: float = 1.0        # sampling_start_value
    changing_rate: float = 2e-5     # sampling_changing_rate, per optimiser step
    stop_iter: int = 50000          # sampling_stop_iter
    r_step_1: int = 25000           # r_sampling_step_1
    r_step_2: int = 50000           # r_sampling_step_2
    r_exp_alpha: float = 5000.0     # r_exp_alpha


def sampling_of(cfg, kind: str) -> Sampling:
    """A model's `Sampling` of `kind` with the schedule settings of `cfg` (a RunConfig)."""
    return Sampling(kind=kind, start_value=cfg.sampling_start_value, changing_rate=cfg.sampling_changing_rate,
                    stop_iter=cfg.sampling_stop_iter, r_step_1=cfg.r_sampling_step_1,
                    r_step_2=cfg.r_sampling_step_2, r_exp_alpha=cfg.r_exp_alpha)


def teacher_forcing_prob(s: Sampling, step: int) -> float:
    """Probability of feeding a true future frame at global optimiser step `step` (0-based), as the
    reference's `schedule_sampling` computes it: decremented once before the first step's use."""
    if s.kind == "none" or step >= s.stop_iter:
        return 0.0
    return max(0.0, s.start_value - s.changing_rate * (step + 1))


def reverse_probs(s: Sampling, step: int) -> tuple[float, float]:
    """(r_eta, eta) of the reference's `reserve_schedule_sampling_exp` at step `step`: the
    probability of feeding the true frame over the input frames (rising from 0.5 to 1) and over the
    future frames (falling from 0.5 to 0)."""
    if step < s.r_step_1:
        return 0.5, 0.5
    if step < s.r_step_2:
        r_eta = 1.0 - 0.5 * math.exp(-float(step - s.r_step_1) / s.r_exp_alpha)
        eta = 0.5 - (0.5 / (s.r_step_2 - s.r_step_1)) * (step - s.r_step_1)
        return r_eta, eta
    return 1.0, 0.0


def sampling_mask(s: Sampling, *, batch: int, in_len: int, out_len: int, shape: tuple[int, int, int],
                  step: int | None, generator: torch.Generator | None, device) -> torch.Tensor:
    """Teacher-forcing flags (B, T_mask, H/p, W/p, p*p*C) for one batch, as the reference builds them
    (one draw per sample and frame, broadcast over the frame), but drawn from `generator` (CPU, owned
    and checkpointed by the loop) in one call instead of per-step numpy loops.

    Training (`step` given): scheduled -> T_mask = out_len - 1; reverse -> T_mask = in_len + out_len - 2.
    Evaluation (`step` None): all zeros, except reverse's input part, which is all ones (true inputs)."""
    hp, wp, pc = shape
    if s.kind == "reverse":
        flags = torch.zeros(batch, in_len + out_len - 2)
        if step is None:
            flags[:, : in_len - 1] = 1.0
        else:
            r_eta, eta = reverse_probs(s, step)
            draw = torch.rand(batch, in_len + out_len - 2, generator=generator)
            flags[:, : in_len - 1] = (draw[:, : in_len - 1] < r_eta).float()
            flags[:, in_len - 1:] = (draw[:, in_len - 1:] < eta).float()
    else:
        flags = torch.zeros(batch, out_len - 1)
        if step is not None:
            eta = teacher_forcing_prob(s, step)
            flags = (torch.rand(batch, out_len - 1, generator=generator) < eta).float()
    return flags.to(device)[:, :, None, None, None].expand(-1, -1, hp, wp, pc)


# ---------------------------------------------------------------- the base class

def patch_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    """The patch grid (H/p, W/p) a model is built for: a frame not divisible by p is padded up."""
    return math.ceil(height / patch), math.ceil(width / patch)


class Recurrent(nn.Module):
    """Base of the frame-by-frame models: patching, masks, the forecast/aux split, the quantizer slot.

    Subclasses set `self.patch_size`, `self.sampling` (a `Sampling`), `self.in_len`, `self.out_len`,
    call `self.init_quantizer(name, dim, kwargs)` and implement `rollout`; inside it they pass their
    latent through `self.quantize(h)` (identity for `none`) at every step. A frame whose size is not
    a multiple of the patch is padded (replicate) and the forecast cropped back, as SimVP does; size
    the model with `patch_grid`.

    Training loss (docs/models.md): the reference trains on the MSE of all T-1 next-frame predictions
    (T = in_len + out_len), the input phase included; the loop's forecast loss covers the out_len
    future frames. `aux` adds the input-phase term weighted (in_len - 1) / out_len, and the model's
    extra loss weighted (T - 1) / out_len, so loop loss = (T - 1) / out_len x the reference's loss
    (with the loop's criterion, `loss_name`, which build_model sets from cfg.loss)."""

    patch_size: int = 1
    sampling: Sampling = Sampling()
    loss_name: str = "l2"

    def init_quantizer(self, name: str, dim: int, kwargs: dict | None) -> None:
        from svqbench.quantizers import build_quantizer
        self.quantizer = build_quantizer(name, dim=dim, **(kwargs or {}))
        self._aux: list[torch.Tensor] = []

    def quantize(self, h: torch.Tensor) -> torch.Tensor:
        q = self.quantizer(h)
        self._aux.append(q.aux_loss)
        return q.z_q

    def rollout(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_loss(self, next_frames: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """The reference's loss terms besides the frame MSE (e.g. PredRNN.V2's decoupling loss)."""
        return next_frames.new_zeros(())

    def regularizer(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loop's hook for a loss on (forecast, target) (SimVP's TAU term); the recurrent models
        return theirs in `aux` instead."""
        return pred.new_zeros(())

    @property
    def passes(self) -> int:
        """Forward passes per forecast, as `svqbench profile` reports it: one rollout over the sequence."""
        return 1

    def forward(self, x: torch.Tensor, *, target: torch.Tensor | None = None, step: int | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        b, t_in, c, h, w = x.shape
        p = self.patch_size
        training = target is not None and step is not None
        # at test time the future frames are never seen: zeros stand in for them, and the mask
        # (all zeros over the future) makes the model feed back its own predictions
        future = target if training else x.new_zeros(b, self.out_len, c, h, w)
        seq = torch.cat([x, future.to(x.dtype)], 1)
        pad_h, pad_w = (-h) % p, (-w) % p
        if pad_h or pad_w:
            seq = F.pad(seq.flatten(0, 1), (0, pad_w, 0, pad_h), mode="replicate").unflatten(0, (b, seq.shape[1]))
        frames = reshape_patch(seq, p)
        mask = sampling_mask(self.sampling, batch=b, in_len=self.in_len, out_len=self.out_len,
                             shape=frames.shape[2:], step=step if training else None,
                             generator=generator, device=x.device)
        self._aux = []
        next_frames = self.rollout(frames, mask)
        # the quantizer's aux loss as if the T-1 latents were one batch (the mean of the steps')
        aux = torch.stack(self._aux).mean() if self._aux else x.new_zeros(())
        out = reshape_patch_back(next_frames, p)[..., :h, :w]  # (B, T-1, C, H, W)
        if training:
            crit = F.mse_loss if self.loss_name == "l2" else F.l1_loss
            scale = (t_in + self.out_len - 1) / self.out_len
            if t_in > 1:
                aux = aux + (t_in - 1) / self.out_len * crit(out[:, : t_in - 1], x[:, 1:])
            aux = aux + scale * self.extra_loss(next_frames, frames)
        return out[:, -self.out_len:], aux
