"""MAU (Chang et al., NeurIPS 2021, "MAU: A Motion-Aware Unit for Video Prediction and Beyond"), as
OpenSTL builds it (openstl/models/mau_model.py, openstl/modules/mau_modules.py): a strided conv
encoder to 1/sr_size of the frame, stacked motion-aware cells that attend over their last `tau`
temporal states, a transposed-conv decoder. Attribute names follow the reference so its state dicts
load by name.

Training as the reference's method: scheduled sampling (`Sampling("scheduled")`), MSE over every
next-frame prediction of the sequence (the input-frame part comes back in `aux`, see `Recurrent`).

Quantizer slot: the top cell's spatial state S_t, the latent the decoder reads, every step (it is
not fed back into any cell, so the recurrence itself stays exact). Frames are edge-padded to a
multiple of patch_size * sr_size (the embedded grid is 37 x 49), the forecast cropped back.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from svqbench.models.recurrent import Recurrent, Sampling, pad_frames, padded_size, sampling_of


class MAUCell(nn.Module):
    """One motion-aware unit: temporal state T and spatial state S in, new (T, S) out."""

    def __init__(self, in_channel: int, num_hidden: int, height: int, width: int, filter_size: int,
                 stride: int, tau: int, cell_mode: str):
        super().__init__()
        self.num_hidden = num_hidden
        self.cell_mode = cell_mode
        self.tau = tau
        self.d = num_hidden * height * width  # the attention's temperature sqrt(d)
        pad = filter_size // 2

        def conv_ln(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, filter_size, stride=stride, padding=pad),
                                 nn.LayerNorm([cout, height, width]))

        self.conv_t = conv_ln(in_channel, 3 * num_hidden)
        self.conv_t_next = conv_ln(in_channel, num_hidden)
        self.conv_s = conv_ln(num_hidden, 3 * num_hidden)
        self.conv_s_next = conv_ln(num_hidden, num_hidden)

    def forward(self, T_t, S_t, t_att, s_att):
        # t_att, s_att: (tau, B, C, h, w), the last tau temporal states and spatial inputs
        s_next = self.conv_s_next(S_t)
        t_next = self.conv_t_next(T_t)
        scores = (s_att * s_next.unsqueeze(0)).sum(dim=(2, 3, 4)) / math.sqrt(self.d)   # (tau, B)
        weights = torch.softmax(scores, dim=0)[:, :, None, None, None]
        T_trend = (t_att * weights).sum(dim=0)
        gate = torch.sigmoid(t_next)
        T_fusion = T_t * gate + (1 - gate) * T_trend
        t_g, t_t, t_s = torch.split(self.conv_t(T_fusion), self.num_hidden, dim=1)
        s_g, s_t, s_s = torch.split(self.conv_s(S_t), self.num_hidden, dim=1)
        T_gate, S_gate = torch.sigmoid(t_g), torch.sigmoid(s_g)
        T_new = T_gate * t_t + (1 - T_gate) * s_t
        S_new = S_gate * s_s + (1 - S_gate) * t_s
        if self.cell_mode == "residual":
            S_new = S_new + S_t
        return T_new, S_new


class MAU(Recurrent):
    def __init__(self, *, in_len: int, out_len: int, channels: int, height: int, width: int, num_hidden: int,
                 num_layers: int, filter_size: int, stride: int, patch_size: int, tau: int, sr_size: int,
                 cell_mode: str, model_mode: str, sampling: Sampling, quantizer: str = "none",
                 quantizer_kwargs: dict | None = None):
        super().__init__()
        self.in_len, self.out_len, self.patch_size, self.sampling = in_len, out_len, patch_size, sampling
        self.frame_size = (height, width)
        self.multiple = patch_size * sr_size
        self.tau, self.sr_size, self.model_mode = tau, sr_size, model_mode
        self.num_layers = num_layers
        self.num_hidden = [num_hidden] * num_layers
        self.frame_channel = patch_size * patch_size * channels
        h = padded_size(height, self.multiple) // patch_size // sr_size
        w = padded_size(width, self.multiple) // patch_size // sr_size
        self.cell_list = nn.ModuleList(
            MAUCell(num_hidden, num_hidden, h, w, filter_size, stride, tau, cell_mode) for _ in range(num_layers))
        n = int(math.log2(sr_size))
        first = nn.Sequential()
        first.add_module("encoder_t_conv-1", nn.Conv2d(self.frame_channel, num_hidden, 1))
        first.add_module("relu_t_-1", nn.LeakyReLU(0.2))
        encoders = [first]
        for i in range(n):
            enc = nn.Sequential()
            enc.add_module(f"encoder_t{i}", nn.Conv2d(num_hidden, num_hidden, 3, stride=2, padding=1))
            enc.add_module(f"encoder_t_relu{i}", nn.LeakyReLU(0.2))
            encoders.append(enc)
        self.encoders = nn.ModuleList(encoders)
        decoders = []
        for i in range(n):
            dec = nn.Sequential()
            dec.add_module(f"c_decoder{i}", nn.ConvTranspose2d(num_hidden, num_hidden, 3, stride=2, padding=1,
                                                               output_padding=1))
            if i < n - 1:  # the reference has no activation after the last up-sampling
                dec.add_module(f"c_decoder_relu{i}", nn.LeakyReLU(0.2))
            decoders.append(dec)
        self.decoders = nn.ModuleList(decoders)
        self.srcnn = nn.Sequential(nn.Conv2d(num_hidden, self.frame_channel, 1))
        # unused in the reference's forward, but part of its model (parameters and state dict)
        self.merge = nn.Conv2d(num_hidden * 2, num_hidden, 1)
        self.conv_last_sr = nn.Conv2d(self.frame_channel * 2, self.frame_channel, 1)
        self.init_quantizer(quantizer, num_hidden, quantizer_kwargs)

    def forward(self, x, *, target=None, step=None, generator=None):
        h, w = x.shape[-2:]
        target = None if target is None else pad_frames(target, self.multiple)
        pred, aux = super().forward(pad_frames(x, self.multiple), target=target, step=step, generator=generator)
        return pred[..., :h, :w], aux

    def rollout(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        frames = frames.permute(0, 1, 4, 2, 3)   # (B, T, p*p*C, H/p, W/p)
        mask = mask.permute(0, 1, 4, 2, 3)
        b, total = frames.shape[:2]
        h, w = frames.shape[3] // self.sr_size, frames.shape[4] // self.sr_size
        zeros = frames.new_zeros(b, self.num_hidden[0], h, w)
        T_pre = [[zeros] * self.tau for _ in range(self.num_layers)]
        S_pre = [[zeros] * self.tau for _ in range(self.num_layers)]
        T_t = [zeros] * self.num_layers
        next_frames, x_gen = [], None
        for t in range(total - 1):
            if t < self.in_len:
                net = frames[:, t]
            else:
                m = mask[:, t - self.in_len]
                net = m * frames[:, t] + (1 - m) * x_gen
            encoded = []
            feature = net
            for enc in self.encoders:
                feature = enc(feature)
                encoded.append(feature)
            S_t = feature
            for i, cell in enumerate(self.cell_list):
                t_att = torch.stack(T_pre[i][-self.tau:], dim=0)
                s_att = torch.stack(S_pre[i][-self.tau:], dim=0)
                S_pre[i].append(S_t)
                T_t[i], S_t = cell(T_t[i], S_t, t_att, s_att)
                T_pre[i].append(T_t[i])
            out = self.quantize(S_t)
            for i, dec in enumerate(self.decoders):
                out = dec(out)
                if self.model_mode == "recall":
                    out = out + encoded[-2 - i]
            x_gen = self.srcnn(out)
            next_frames.append(x_gen)
        return torch.stack(next_frames, dim=1).permute(0, 1, 3, 4, 2)


def build(cfg, shape) -> MAU:
    from svqbench.errors import UserError
    from svqbench.quantizers import quantizer_kwargs
    if cfg.mau_sr_size < 1 or cfg.mau_sr_size & (cfg.mau_sr_size - 1):
        raise UserError(f"mau-sr-size must be a power of 2, got {cfg.mau_sr_size}")
    if cfg.mau_tau < 1:
        raise UserError(f"mau-tau must be >= 1, got {cfg.mau_tau}")
    sampling = sampling_of(cfg, "scheduled")
    return MAU(in_len=shape.in_len, out_len=shape.out_len, channels=shape.channels, height=shape.height,
               width=shape.width, num_hidden=cfg.rnn_hidden, num_layers=cfg.rnn_layers, filter_size=cfg.filter_size,
               stride=cfg.stride, patch_size=cfg.patch_size, tau=cfg.mau_tau, sr_size=cfg.mau_sr_size,
               cell_mode=cfg.mau_cell_mode, model_mode=cfg.mau_model_mode, sampling=sampling,
               quantizer=cfg.quantizer, quantizer_kwargs=quantizer_kwargs(cfg))


# configs/<dataset>/MAU.py: num_hidden 64,64,64,64, filter 5, stride 1, patch 1, tau 5, normal modes,
# scheduled sampling 1.0 - 2e-5 per step until 50k; OpenSTL trains with MSE. lr/sr_size/schedule vary.
_PAPER = dict(rnn_hidden=64, rnn_layers=4, filter_size=5, stride=1, patch_size=1, layer_norm=False, mau_tau=5,
              mau_sr_size=2, mau_cell_mode="normal", mau_model_mode="normal", sampling_start_value=1.0,
              sampling_changing_rate=2e-5, sampling_stop_iter=50000, batch_size=16, loss="l2", quantizer="none",
              warmup_epochs=0)
# quick: 2 narrow cells, 3x3 kernels, tau 3 (the embedded grid at 1/2: 19 x 25), 12 epochs (about
# 110 steps on the embedded data); teacher forcing fades out over the first 100 steps instead of 50k
_QUICK = dict(rnn_hidden=16, rnn_layers=2, filter_size=3, stride=1, patch_size=1, layer_norm=False, mau_tau=3,
              mau_sr_size=2, mau_cell_mode="normal", mau_model_mode="normal", sampling_start_value=1.0,
              sampling_changing_rate=0.01, sampling_stop_iter=100, loss="l2", quantizer="none", epochs=12)


def _preset(quick_lr: float | None = None, **paper) -> dict[str, dict]:
    p = {**_PAPER, **paper}
    q = {**_QUICK, "lr": quick_lr if quick_lr is not None else p.get("lr", 1e-3)}
    return {"paper": p, "quick": q}


PRESETS: dict[str, dict[str, dict]] = {
    "weatherbench-s-t2m": _preset(lr=1e-4, schedule="cosine", warmup_epochs=0, quick_lr=1e-3),
    "weatherbench-s-r": _preset(mau_sr_size=4, lr=5e-4, schedule="cosine", warmup_epochs=0, quick_lr=1e-3),
    "weatherbench-s-uv10": _preset(lr=1e-3, schedule="cosine", warmup_epochs=0),   # lr: OpenSTL's default
    "weatherbench-s-tcc": _preset(lr=1e-3, schedule="cosine", warmup_epochs=0),
    "weatherbench-m": _preset(mau_sr_size=4, lr=5e-4, schedule="cosine", warmup_epochs=0, quick_lr=1e-3),
    "taxibj": _preset(lr=1e-3, schedule="cosine", warmup_epochs=5),
    "kth": _preset(lr=5e-4, schedule="onecycle", quick_lr=1e-3),
    "kitticaltech": _preset(lr=1e-3, schedule="onecycle"),
    "human36m": _preset(mau_sr_size=4, lr=1e-4, schedule="cosine", warmup_epochs=0, quick_lr=1e-3),
    "default": _preset(lr=1e-3, schedule="cosine", warmup_epochs=0),
}
