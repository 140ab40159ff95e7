"""SimVP (OpenSTL layout): per-frame encoder -> quantizer slot -> translator -> decoder.

Shapes follow OpenSTL exactly so parameter counts match the published ones; see docs/reference.md.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from svqbench.models.layout import n_s_problem
from svqbench.models.translators import build_translator
from svqbench.quantizers import build_quantizer
from svqbench.quantizers.base import QuantOut


class ConvSC(nn.Module):
    """conv k=3 (stride 2 to downsample, conv to 4C + PixelShuffle(2) to upsample) -> GroupNorm(2) -> SiLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, *, down: bool = False, up: bool = False):
        super().__init__()
        stride = 2 if down else 1
        padding = (kernel - stride + 1) // 2
        if up:
            self.conv = nn.Sequential(nn.Conv2d(c_in, c_out * 4, kernel, 1, padding), nn.PixelShuffle(2))
        else:
            self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding)
        self.norm = nn.GroupNorm(2, c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def _samplings(n: int) -> list[bool]:
    """Which encoder blocks halve the frame (the first block keeps full resolution)."""
    problem = n_s_problem(n)
    if problem:
        raise ValueError(problem)
    return [False, True] * (n // 2)


class Encoder(nn.Module):
    def __init__(self, c_in: int, hid: int, n_s: int, kernel: int = 3):
        super().__init__()
        s = _samplings(n_s)
        self.blocks = nn.ModuleList(
            [ConvSC(c_in, hid, kernel, down=s[0])] + [ConvSC(hid, hid, kernel, down=d) for d in s[1:]])

    def forward(self, x):
        skip = self.blocks[0](x)
        z = skip
        for block in self.blocks[1:]:
            z = block(z)
        return z, skip


class Decoder(nn.Module):
    def __init__(self, hid: int, c_out: int, n_s: int, kernel: int = 3):
        super().__init__()
        s = list(reversed(_samplings(n_s)))
        self.blocks = nn.ModuleList([ConvSC(hid, hid, kernel, up=u) for u in s])
        self.readout = nn.Conv2d(hid, c_out, 1)

    def forward(self, z, skip):
        for block in self.blocks[:-1]:
            z = block(z)
        # the full-resolution first encoder output bypasses quantizer and translator (OpenSTL)
        return self.readout(self.blocks[-1](z + skip))


class SimVP(nn.Module):
    """Forecast (B, T_out, C, H, W) from (B, T_in, C, H, W).

    `placement` puts the quantizer before (paper default) or after the translator. Frames whose
    size is not a multiple of the encoder's downsampling are padded (replicate) and cropped back.
    Longer outputs are rolled out autoregressively; shorter ones truncated.
    """

    def __init__(self, *, in_len: int, out_len: int, channels: int, height: int, width: int,
                 hid_s: int = 32, hid_t: int = 256, n_s: int = 2, n_t: int = 8,
                 backbone: str = "gsta", mlp_ratio: float = 8.0, drop_path: float = 0.0,
                 quantizer: str = "none", quantizer_kwargs: dict | None = None,
                 placement: str = "before", spatio_kernel: int = 3, channels_last: bool | None = None):
        super().__init__()
        # None: channels-last translator activations on CPU, where its 1x1 and depthwise convs run
        # faster in that layout (benchmarks/simvp_profile.py, docs/translators.md); NCHW elsewhere.
        self.channels_last = channels_last
        if placement not in ("before", "after"):
            raise ValueError(f"placement must be 'before' or 'after', got {placement!r}")
        self.in_len, self.out_len, self.placement = in_len, out_len, placement
        self.factor = 2 ** (n_s // 2)
        self.grid = (height, width)
        hp, wp = (math.ceil(height / self.factor) * self.factor, math.ceil(width / self.factor) * self.factor)
        latent_hw = (hp // self.factor, wp // self.factor)
        self.enc = Encoder(channels, hid_s, n_s, spatio_kernel)
        self.quantizer = build_quantizer(quantizer, dim=hid_s, **(quantizer_kwargs or {}))
        self.translator = build_translator(backbone, channels_in=in_len * hid_s, hidden=hid_t, depth=n_t,
                                           input_resolution=latent_hw, drop_path=drop_path,
                                           mlp_ratio=mlp_ratio)
        self.dec = Decoder(hid_s, channels, n_s, spatio_kernel)

    @property
    def passes(self) -> int:
        """Encoder-translator-decoder passes per forecast (more than one when rolling out)."""
        return math.ceil(self.out_len / self.in_len)

    def regularizer(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Extra training loss of the translator (TAU's differential divergence), else 0."""
        reg = getattr(self.translator, "regularizer", None)
        return reg(pred, target) if reg is not None else pred.new_zeros(())

    def _step(self, x: torch.Tensor, channels_last: bool) -> tuple[torch.Tensor, QuantOut]:
        b, t, c, h, w = x.shape
        z, skip = self.enc(x.reshape(b * t, c, h, w))
        n, cz, hz, wz = z.shape
        if self.placement == "before":
            q = self.quantizer(z)
            z = q.z_q
        z = z.reshape(b, t * cz, hz, wz)
        if channels_last:  # the translator only: the encoder and decoder gain little from it
            z = z.contiguous(memory_format=torch.channels_last)
        z = self.translator(z).reshape(n, cz, hz, wz)
        if self.placement == "after":
            q = self.quantizer(z)
            z = q.z_q
        y = self.dec(z, skip)
        return y.reshape(b, t, c, h, w), q

    def forward(self, x: torch.Tensor, *, target: torch.Tensor | None = None, step: int | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (forecast, auxiliary loss of the quantizer summed over roll-out steps). `target`,
        `step` and `generator` are the forecasting-model interface's (docs/models.md); SimVP needs none."""
        h, w = self.grid
        pad_h, pad_w = (-h) % self.factor, (-w) % self.factor
        if pad_h or pad_w:
            b, t = x.shape[:2]
            x = F.pad(x.flatten(0, 1), (0, pad_w, 0, pad_h), mode="replicate").unflatten(0, (b, t))
        channels_last = x.device.type == "cpu" if self.channels_last is None else self.channels_last
        outs, aux = [], x.new_zeros(())
        produced, cur = 0, x
        while produced < self.out_len:
            y, q = self._step(cur, channels_last)
            aux = aux + q.aux_loss
            outs.append(y)
            produced += y.shape[1]
            cur = y
        y = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        if y.shape[1] > self.out_len:
            y = y[:, : self.out_len]
        return y[..., :h, :w], aux
