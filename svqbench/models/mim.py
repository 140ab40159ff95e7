"""MIM, Memory In Memory (Wang et al., 2019), as OpenSTL builds it (openstl/models/mim_model.py and
openstl/modules/mim_modules.py): a spatiotemporal LSTM cell at the bottom, MIM blocks above it, and
between each pair of layers a MIMN cell that models the differences of the hidden states between
steps (the non-stationary part); each MIM block replaces the forget gate of its temporal memory
with a small LSTM (its `MIMS` path) over that memory, fed by the difference signal. Trained with
scheduled sampling.

Quantizer slot: the top MIM block's hidden state before `conv_last`, at every step: as in PredRNN it
is the one latent the frame is read from (the difference and memory states are internal).

One deliberate departure: the reference keeps each block's MIMS cell state (`convlstm_c`) as a
module attribute that survives from one batch to the next (and requires equal batch sizes, hence
its `drop_last`); here it starts from zeros with every sequence, so a forecast depends on its own
inputs only and a resumed run equals an uninterrupted one. Within a sequence it is detached at
every step, as in the reference.
"""
from __future__ import annotations

import torch
from torch import nn

from svqbench.models.recurrent import Recurrent, sampling_of
from svqbench.models.st_lstm import (FORGET_BIAS, QUICK_RNN, SpatioTemporalLSTMCell, frame_grid, gate_conv,
                                     reference_preset, step_input)


class _PeepholeLSTM(nn.Module):
    """What MIMN and MIM's MIMS path share: a conv LSTM with elementwise (per channel and pixel)
    peephole weights on the cell state, `ct_weight` for the input/forget gates, `oc_weight` for the
    output gate (which is why its parameters depend on the patched frame size)."""

    def _init_lstm(self, in_channel: int, num_hidden: int, height: int, width: int, filter_size: int,
                   stride: int, layer_norm: bool, h_channel: int) -> None:
        self.num_hidden = num_hidden
        self.ct_weight = nn.Parameter(torch.zeros(num_hidden * 2, height, width))
        self.oc_weight = nn.Parameter(torch.zeros(num_hidden, height, width))
        self.conv_h_concat = gate_conv(h_channel, num_hidden * 4, filter_size, stride, layer_norm, height, width)
        self.conv_x_concat = gate_conv(in_channel, num_hidden * 4, filter_size, stride, layer_norm, height, width)

    def _lstm(self, x, h, c):
        h = torch.zeros_like(x) if h is None else h
        c = torch.zeros_like(x) if c is None else c
        n = self.num_hidden
        i_h, g_h, f_h, o_h = torch.split(self.conv_h_concat(h), n, dim=1)
        i_c, f_c = torch.split(c.repeat(1, 2, 1, 1) * self.ct_weight, n, dim=1)
        i_x, g_x, f_x, o_x = torch.split(self.conv_x_concat(x), n, dim=1)
        i = torch.sigmoid(i_h + i_c + i_x)
        f = torch.sigmoid(f_h + f_c + f_x + FORGET_BIAS)
        c_new = f * c + i * torch.tanh(g_h + g_x)
        h_new = torch.sigmoid(o_h + o_x + c_new * self.oc_weight) * torch.tanh(c_new)
        return h_new, c_new


class MIMN(_PeepholeLSTM):
    """The non-stationarity cell between two layers: an LSTM over the hidden-state differences."""

    def __init__(self, in_channel: int, num_hidden: int, height: int, width: int, filter_size: int, stride: int,
                 layer_norm: bool):
        super().__init__()
        # the reference convolves its own hidden state with in_channel inputs too (all widths are equal)
        self._init_lstm(in_channel, num_hidden, height, width, filter_size, stride, layer_norm, h_channel=in_channel)
        # present (and counted) in the reference, never used in its forward
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x, h, c):
        return self._lstm(x, h, c)


class MIMBlock(_PeepholeLSTM):
    def __init__(self, in_channel: int, num_hidden: int, height: int, width: int, filter_size: int, stride: int,
                 layer_norm: bool):
        super().__init__()
        conv = lambda i, o: gate_conv(i, o, filter_size, stride, layer_norm, height, width)  # noqa: E731
        # the reference's widths: its temporal convolution reads the hidden state with in_channel inputs
        self.conv_t_cc = conv(in_channel, num_hidden * 3)
        self.conv_s_cc = conv(num_hidden, num_hidden * 4)
        self.conv_x_cc = conv(num_hidden, num_hidden * 4)
        self._init_lstm(num_hidden, num_hidden, height, width, filter_size, stride, layer_norm, h_channel=num_hidden)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x, diff_h, h, c, m, mims_c):
        """One step: returns (h, c, m, mims_c), mims_c being the MIMS path's cell state (None at the
        start of a sequence)."""
        n = self.num_hidden
        diff_h = torch.zeros_like(x) if diff_h is None else diff_h
        i_s, g_s, f_s, o_s = torch.split(self.conv_s_cc(m), n, dim=1)
        i_t, g_t, o_t = torch.split(self.conv_t_cc(h), n, dim=1)
        i_x, g_x, f_x, o_x = torch.split(self.conv_x_cc(x), n, dim=1)
        new_m = (torch.sigmoid(f_x + f_s + FORGET_BIAS) * m
                 + torch.sigmoid(i_x + i_s) * torch.tanh(g_x + g_s))
        # MIMS: the temporal memory passes through an LSTM driven by the difference signal
        # (its state detached at every step, as in the reference)
        c, mims_c = self._lstm(diff_h, c, None if mims_c is None else mims_c.detach())
        new_c = c + torch.sigmoid(i_x + i_t) * torch.tanh(g_x + g_t)
        o = torch.sigmoid(o_x + o_t + o_s)
        new_h = o * torch.tanh(self.conv_last(torch.cat((new_c, new_m), 1)))
        return new_h, new_c, new_m, mims_c


class MIM(Recurrent):
    def __init__(self, *, in_len: int, out_len: int, channels: int, height: int, width: int, num_hidden: list[int],
                 filter_size: int, stride: int, layer_norm: bool, patch_size: int, sampling,
                 quantizer: str = "none", quantizer_kwargs: dict | None = None):
        super().__init__()
        self.in_len, self.out_len, self.patch_size, self.sampling = in_len, out_len, patch_size, sampling
        hp, wp, self.frame_channel = frame_grid(height, width, channels, patch_size)
        self.num_layers, self.num_hidden = len(num_hidden), list(num_hidden)
        args = (hp, wp, filter_size, stride, layer_norm)
        self.stlstm_layer = nn.ModuleList(
            [SpatioTemporalLSTMCell(self.frame_channel, num_hidden[0], *args)]
            + [MIMBlock(num_hidden[i - 1], num_hidden[i], *args) for i in range(1, self.num_layers)])
        self.stlstm_layer_diff = nn.ModuleList(
            MIMN(num_hidden[i], num_hidden[i + 1], *args) for i in range(self.num_layers - 1))
        self.conv_last = nn.Conv2d(num_hidden[-1], self.frame_channel, kernel_size=1, stride=1, padding=0, bias=False)
        self.init_quantizer(quantizer, num_hidden[-1], quantizer_kwargs)

    def rollout(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        frames = frames.permute(0, 1, 4, 2, 3)
        mask = mask.permute(0, 1, 4, 2, 3)
        b, t_total, _, h, w = frames.shape
        layers = self.num_layers
        h_t = [frames.new_zeros(b, n, h, w) for n in self.num_hidden]
        c_t = [frames.new_zeros(b, n, h, w) for n in self.num_hidden]
        diff_h, diff_c, mims_c = [None] * layers, [None] * layers, [None] * layers
        st_memory = frames.new_zeros(b, self.num_hidden[0], h, w)
        x_gen, next_frames = None, []
        for t in range(t_total - 1):
            net = step_input(self.sampling, self.in_len, t, frames, mask, x_gen)
            previous_h0 = h_t[0]
            h_t[0], c_t[0], st_memory, _, _ = self.stlstm_layer[0](net, h_t[0], c_t[0], st_memory)
            for i in range(1, layers):
                # the difference cells start at the second step (the reference also runs them on zeros at
                # the first step and discards the result, which changes nothing)
                if t > 0:
                    signal = h_t[0] - previous_h0 if i == 1 else diff_h[i - 2]
                    diff_h[i - 1], diff_c[i - 1] = self.stlstm_layer_diff[i - 1](signal, diff_h[i - 1], diff_c[i - 1])
                h_t[i], c_t[i], st_memory, mims_c[i] = self.stlstm_layer[i](
                    h_t[i - 1], diff_h[i - 1], h_t[i], c_t[i], st_memory, mims_c[i])
            x_gen = self.conv_last(self.quantize(h_t[-1]))
            next_frames.append(x_gen)
        return torch.stack(next_frames, 1).permute(0, 1, 3, 4, 2)


def build(cfg, shape) -> MIM:
    from svqbench.quantizers import quantizer_kwargs
    return MIM(in_len=shape.in_len, out_len=shape.out_len, channels=shape.channels, height=shape.height,
               width=shape.width, num_hidden=[cfg.rnn_hidden] * cfg.rnn_layers, filter_size=cfg.filter_size,
               stride=cfg.stride, layer_norm=cfg.layer_norm, patch_size=cfg.patch_size,
               sampling=sampling_of(cfg, "scheduled"), quantizer=cfg.quantizer,
               quantizer_kwargs=quantizer_kwargs(cfg))


def _scales(paper: dict) -> dict:
    return {"paper": paper, "quick": dict(QUICK_RNN, patch_size=paper["patch_size"])}


# From OpenSTL's configs/<folder>/MIM.py (values a config omits or comments out: OpenSTL's defaults).
# weather/t2m_5_625, r_5_625 and tcc_5_625 have no MIM.py in the reference snapshot read: uv10_5_625's.
_WEATHER = reference_preset(4, 1e-3, schedule="cosine")
PRESETS: dict[str, dict[str, dict]] = {
    "weatherbench-s-t2m": _scales(_WEATHER),
    "weatherbench-s-r": _scales(_WEATHER),
    "weatherbench-s-uv10": _scales(_WEATHER),                                      # weather/uv10_5_625
    "weatherbench-s-tcc": _scales(_WEATHER),
    "weatherbench-m": _scales(reference_preset(4, 1e-4, schedule="cosine")),       # weather/mv_4_s6_5_625
    "taxibj": _scales(reference_preset(2, 1e-2, schedule="cosine", warmup_epochs=5)),
    "kth": _scales(reference_preset(4, 1e-3)),
    "kitticaltech": _scales(reference_preset(2, 1e-2)),
    "human36m": _scales(reference_preset(4, 1e-3)),
    "default": {"paper": _WEATHER, "quick": dict(QUICK_RNN)},
}
