"""What PredRNN, PredRNN.V2 and MIM share: OpenSTL's spatiotemporal LSTM cell (SpatioTemporalLSTMCell,
whose V2 variant has the same layers and also returns the memory increments), its gate convolutions,
and the choice of the frame fed at each step under (reverse) scheduled sampling.

Attribute names follow OpenSTL (openstl/modules/predrnn_modules.py) so its state dicts load by name:
each gate convolution is an `nn.Sequential` (conv, then LayerNorm when `layer_norm`), hence keys such
as `conv_x.0.weight`.
"""
from __future__ import annotations

import torch
from torch import nn

from svqbench.models.recurrent import Sampling, patch_grid

FORGET_BIAS = 1.0  # added to every forget gate's pre-activation, as in the reference cells


def gate_conv(in_channels: int, out_channels: int, filter_size: int, stride: int, layer_norm: bool,
              height: int, width: int) -> nn.Sequential:
    """A bias-free 'same' convolution, followed by a LayerNorm over (channels, height, width) when
    `layer_norm` (which is why the reference cells need the patched frame size)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=filter_size, stride=stride, padding=filter_size // 2,
                     bias=False)
    if layer_norm:
        return nn.Sequential(conv, nn.LayerNorm([out_channels, height, width]))
    return nn.Sequential(conv)


def step_input(sampling: Sampling, in_len: int, t: int, frames: torch.Tensor, mask: torch.Tensor,
               x_gen: torch.Tensor | None) -> torch.Tensor:
    """The frame the reference feeds at step t (frames (B, T, C, H, W), mask (B, T_mask, C, H, W)).

    Scheduled sampling: the true inputs, then per future step the true frame where the mask is 1 and
    the previous prediction where it is 0. Reverse scheduled sampling: the mask covers every step
    after the first, inputs included."""
    if sampling.kind == "reverse":
        if t == 0:
            return frames[:, 0]
        m = mask[:, t - 1]
    else:
        if t < in_len:
            return frames[:, t]
        m = mask[:, t - in_len]
    return m * frames[:, t] + (1 - m) * x_gen


class SpatioTemporalLSTMCell(nn.Module):
    """PredRNN's ST-LSTM cell: a temporal memory c (per layer) and a spatiotemporal memory m that
    zigzags through the layers; the output gate reads both. `forward` returns (h, c, m, delta_c,
    delta_m), the increments being what PredRNN.V2's decoupling loss compares."""

    def __init__(self, in_channel: int, num_hidden: int, height: int, width: int, filter_size: int, stride: int,
                 layer_norm: bool):
        super().__init__()
        self.num_hidden = num_hidden
        conv = lambda i, o: gate_conv(i, o, filter_size, stride, layer_norm, height, width)  # noqa: E731
        self.conv_x = conv(in_channel, num_hidden * 7)
        self.conv_h = conv(num_hidden, num_hidden * 4)
        self.conv_m = conv(num_hidden, num_hidden * 3)
        self.conv_o = conv(num_hidden * 2, num_hidden)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x, h, c, m):
        n = self.num_hidden
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = torch.split(self.conv_x(x), n, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h), n, dim=1)
        i_m, f_m, g_m = torch.split(self.conv_m(m), n, dim=1)
        delta_c = torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)
        c_new = torch.sigmoid(f_x + f_h + FORGET_BIAS) * c + delta_c
        delta_m = torch.sigmoid(i_xm + i_m) * torch.tanh(g_xm + g_m)
        m_new = torch.sigmoid(f_xm + f_m + FORGET_BIAS) * m + delta_m
        mem = torch.cat((c_new, m_new), 1)
        h_new = torch.sigmoid(o_x + o_h + self.conv_o(mem)) * torch.tanh(self.conv_last(mem))
        return h_new, c_new, m_new, delta_c, delta_m



# ---------------------------------------------------------------- presets shared by the family

def reference_preset(patch_size: int, lr: float, *, batch_size: int = 16, schedule: str = "onecycle",
                     warmup_epochs: int = 0, **extra) -> dict:
    """RunConfig values of an OpenSTL PredRNN-family config (configs/<dataset>/<Model>.py): every one
    uses four 128-channel layers, 5x5 filters, no layer norm and the same sampling schedule, and
    all but one (E3D-LSTM on KTH) stride 1; they differ in patch size and optimiser. Values a config leaves out take OpenSTL's
    defaults (openstl/utils/parser.py: lr 1e-3, batch 16, onecycle, no warm-up). OpenSTL trains
    these models with MSE."""
    extra = {"stride": 1, **extra}
    return dict(rnn_hidden=128, rnn_layers=4, filter_size=5, layer_norm=False, patch_size=patch_size,
                sampling_start_value=1.0, sampling_changing_rate=2e-5, sampling_stop_iter=50000,
                r_sampling_step_1=25000, r_sampling_step_2=50000, r_exp_alpha=5000.0,
                lr=lr, batch_size=batch_size, schedule=schedule, warmup_epochs=warmup_epochs, loss="l2",
                quantizer="none", **extra)


# Quick scale (2 CPU cores, minutes): two 16-channel layers with 3x3 filters, 2x2 patches, and schedules compressed
# to the ~200 optimiser steps of a quick run (5 epochs x 40 steps), so that by its end the model has
# learnt to roll out on its own predictions as it must at test time (teacher forcing reaches 0 at
# step 150 instead of 50000; the reverse schedule moves between steps 50 and 150).
QUICK_RNN = dict(rnn_hidden=16, rnn_layers=2, filter_size=3, stride=1, layer_norm=False, patch_size=2,
                 sampling_start_value=1.0, sampling_changing_rate=1.0 / 150, sampling_stop_iter=150,
                 r_sampling_step_1=50, r_sampling_step_2=150, r_exp_alpha=20.0, lr=1e-3, schedule="cosine",
                 warmup_epochs=0, loss="l2", quantizer="none")


def frame_grid(height: int, width: int, channels: int, patch: int) -> tuple[int, int, int]:
    """(H/p, W/p, p*p*C): the patch grid a model is built for (padded up, recurrent.patch_grid) and
    the channels of one patched frame (OpenSTL's frame_channel)."""
    return (*patch_grid(height, width, patch), patch * patch * channels)
