"""ConvLSTM (Shi et al. 2015) as OpenSTL builds and trains it (openstl/models/convlstm_model.py).

A stack of convolutional LSTM cells over patch-reshaped frames; a 1x1 convolution (`conv_last`)
reads the next frame out of the top layer's hidden state. Attribute names are OpenSTL's, so its
state dicts load by name. Each cell also carries OpenSTL's `conv_o` and `conv_last`, which its
forward never uses: they are kept because they are in the reference's state dict and parameter
count (Table 12 counts them).

Quantizer slot: the top layer's hidden state as `conv_last` reads it, at every step. It is the
model's latent of the frame it is about to emit (the analogue of SimVP's encoder output); the
recurrent state itself stays unquantized, so the memory path is the reference's (docs/models.md).
"""
from __future__ import annotations

import torch
from torch import nn

from svqbench.models.recurrent import Recurrent, patch_grid, sampling_of


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer: gates from conv(x) + conv(h), forget bias none (as the reference)."""

    def __init__(self, in_channel: int, num_hidden: int, height: int, width: int, filter_size: int,
                 stride: int, layer_norm: bool):
        super().__init__()
        self.num_hidden = num_hidden
        pad = filter_size // 2

        def gate(c_in: int, c_out: int) -> nn.Sequential:
            conv = nn.Conv2d(c_in, c_out, filter_size, stride, pad, bias=False)
            return nn.Sequential(conv, nn.LayerNorm([c_out, height, width])) if layer_norm else nn.Sequential(conv)
        self.conv_x = gate(in_channel, 4 * num_hidden)
        self.conv_h = gate(num_hidden, 4 * num_hidden)
        self.conv_o = gate(2 * num_hidden, num_hidden)               # unused by the reference's forward
        self.conv_last = nn.Conv2d(2 * num_hidden, num_hidden, 1, bias=False)  # unused likewise

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i_x, f_x, g_x, o_x = torch.split(self.conv_x(x), self.num_hidden, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h), self.num_hidden, dim=1)
        c = torch.sigmoid(f_x + f_h) * c + torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)
        h = torch.sigmoid(o_x + o_h) * torch.tanh(c)
        return h, c


class ConvLSTM(Recurrent):
    def __init__(self, *, in_len: int, out_len: int, channels: int, height: int, width: int,
                 num_layers: int = 4, num_hidden: int = 128, filter_size: int = 5, stride: int = 1,
                 patch_size: int = 2, layer_norm: bool = False, sampling=None,
                 quantizer: str = "none", quantizer_kwargs: dict | None = None):
        super().__init__()
        self.in_len, self.out_len, self.patch_size = in_len, out_len, patch_size
        if sampling is not None:
            self.sampling = sampling
        self.num_layers, self.num_hidden = num_layers, [num_hidden] * num_layers
        self.frame_channel = patch_size * patch_size * channels
        hp, wp = patch_grid(height, width, patch_size)
        self.cell_list = nn.ModuleList(
            ConvLSTMCell(self.frame_channel if i == 0 else num_hidden, num_hidden, hp, wp, filter_size, stride,
                         layer_norm) for i in range(num_layers))
        self.conv_last = nn.Conv2d(num_hidden, self.frame_channel, 1, bias=False)
        self.init_quantizer(quantizer, num_hidden, quantizer_kwargs)

    def rollout(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        frames = frames.permute(0, 1, 4, 2, 3)   # (B, T, p*p*C, H/p, W/p)
        mask = mask.permute(0, 1, 4, 2, 3)
        b, t, _, hp, wp = frames.shape
        h = [frames.new_zeros(b, n, hp, wp) for n in self.num_hidden]
        c = [frames.new_zeros(b, n, hp, wp) for n in self.num_hidden]
        outs = []
        x_gen = None
        for step in range(t - 1):
            if step < self.in_len:
                net = frames[:, step]
            else:  # teacher forcing: the true frame where the mask says so, else the last prediction
                m = mask[:, step - self.in_len]
                net = m * frames[:, step] + (1 - m) * x_gen
            h[0], c[0] = self.cell_list[0](net, h[0], c[0])
            for i in range(1, self.num_layers):
                h[i], c[i] = self.cell_list[i](h[i - 1], h[i], c[i])
            x_gen = self.conv_last(self.quantize(h[-1]))
            outs.append(x_gen)
        return torch.stack(outs, 1).permute(0, 1, 3, 4, 2)


def build(cfg, shape) -> ConvLSTM:
    from svqbench.errors import UserError
    from svqbench.quantizers import quantizer_kwargs
    if cfg.stride != 1:  # the reference pads for stride 1 only: a larger stride shrinks the state each step
        raise UserError(f"convlstm needs stride 1 (the reference's), got {cfg.stride}")
    return ConvLSTM(in_len=shape.in_len, out_len=shape.out_len, channels=shape.channels, height=shape.height,
                    width=shape.width, num_layers=cfg.rnn_layers, num_hidden=cfg.rnn_hidden,
                    filter_size=cfg.filter_size, stride=cfg.stride, patch_size=cfg.patch_size,
                    layer_norm=cfg.layer_norm, sampling=sampling_of(cfg, "scheduled"),
                    quantizer=cfg.quantizer, quantizer_kwargs=quantizer_kwargs(cfg))


# Reference configs (OpenSTL configs/<dataset>/ConvLSTM.py): 4 layers of 128, filter 5, stride 1, no layer
# norm, scheduled sampling 1.0 - 2e-5 per step until 50,000; MSE loss. Values a config leaves out are
# OpenSTL's parser defaults (lr 1e-3, onecycle, batch 16, no warm-up). Epochs and patience stay the
# dataset preset's (the paper's protocol for that dataset).
_PAPER = dict(rnn_hidden=128, rnn_layers=4, filter_size=5, stride=1, patch_size=2, layer_norm=False,
              sampling_start_value=1.0, sampling_changing_rate=2e-5, sampling_stop_iter=50000,
              loss="l2", quantizer="none", batch_size=16, lr=1e-3, schedule="onecycle", warmup_epochs=0)
# Quick: 2 narrow layers, 3x3 kernels; teacher forcing fades out over the first 50 steps (a quick run
# takes 80-320), as the reference's 50,000-step fade covers the first part of its runs.
_QUICK = dict(rnn_hidden=16, rnn_layers=2, filter_size=3, stride=1, patch_size=2, layer_norm=False,
              sampling_start_value=1.0, sampling_changing_rate=0.02, sampling_stop_iter=50,
              loss="l2", quantizer="none", lr=5e-3)


def _cell(**paper) -> dict[str, dict]:
    return {"paper": dict(_PAPER, **paper), "quick": dict(_QUICK)}


PRESETS: dict[str, dict[str, dict]] = {
    # t2m_5_625/ConvLSTM.py is not in OpenSTL's tree as indexed; a fork's copy gives lr 5e-4, cosine, no
    # warm-up (batch 64 there; 16 as every other OpenSTL weather config)
    "weatherbench-s-t2m": _cell(lr=5e-4, schedule="cosine"),
    "weatherbench-s-r": _cell(lr=5e-4, schedule="cosine"),
    "weatherbench-s-uv10": _cell(lr=5e-4),
    "weatherbench-s-tcc": _cell(lr=1e-4, schedule="cosine"),
    "weatherbench-m": _cell(lr=5e-4, schedule="cosine"),
    "taxibj": _cell(lr=5e-4, schedule="cosine", warmup_epochs=5),
    "kth": _cell(),
    "kitticaltech": _cell(lr=5e-3),
    "human36m": _cell(patch_size=4, lr=1e-4, schedule="cosine"),
    "default": _cell(lr=5e-4, schedule="cosine"),
}
