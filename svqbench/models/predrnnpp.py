"""PredRNN++ (Wang et al., 2018), as OpenSTL builds it (openstl/models/predrnnpp_model.py and
openstl/modules/predrnnpp_modules.py): causal LSTM cells, whose spatiotemporal memory is updated
from the freshly updated temporal memory (a cascade instead of PredRNN's parallel update), and a
gradient highway unit (`gradient_highway`) between the first and the second layer that carries a
gated shortcut state through time. Trained with scheduled sampling.

Quantizer slot: the top layer's hidden state before `conv_last`, at every step (as PredRNN).
"""
from __future__ import annotations

import torch
from torch import nn

from svqbench.errors import UserError
from svqbench.models.recurrent import Recurrent, sampling_of
from svqbench.models.st_lstm import (FORGET_BIAS, QUICK_RNN, frame_grid, gate_conv, reference_preset,
                                     step_input)

GHU_INIT_RANGE = 0.001  # the reference initialises the highway's convolutions U(-0.001, 0.001)


class CausalLSTMCell(nn.Module):
    def __init__(self, in_channel: int, num_hidden: int, height: int, width: int, filter_size: int, stride: int,
                 layer_norm: bool):
        super().__init__()
        self.num_hidden = num_hidden
        conv = lambda i, o: gate_conv(i, o, filter_size, stride, layer_norm, height, width)  # noqa: E731
        self.conv_x = conv(in_channel, num_hidden * 7)
        self.conv_h = conv(num_hidden, num_hidden * 4)
        self.conv_c = conv(num_hidden, num_hidden * 3)
        self.conv_m = conv(num_hidden, num_hidden * 3)
        self.conv_o = conv(num_hidden * 2, num_hidden)
        self.conv_c2m = conv(num_hidden, num_hidden * 4)
        self.conv_om = conv(num_hidden, num_hidden)
        self.conv_last = nn.Conv2d(num_hidden * 2, num_hidden, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, x, h, c, m):
        n = self.num_hidden
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = torch.split(self.conv_x(x), n, dim=1)
        i_h, f_h, g_h, o_h = torch.split(self.conv_h(h), n, dim=1)
        i_m, f_m, m_m = torch.split(self.conv_m(m), n, dim=1)
        i_c, f_c, g_c = torch.split(self.conv_c(c), n, dim=1)
        c_new = (torch.sigmoid(f_x + f_h + f_c + FORGET_BIAS) * c
                 + torch.sigmoid(i_x + i_h + i_c) * torch.tanh(g_x + g_h + g_c))
        # the spatiotemporal memory reads the new temporal memory (the "causal" cascade)
        i_c2, g_c2, f_c2, o_c = torch.split(self.conv_c2m(c_new), n, dim=1)
        m_new = (torch.sigmoid(f_xm + f_m + f_c2 + FORGET_BIAS) * torch.tanh(m_m)
                 + torch.sigmoid(i_xm + i_m + i_c2) * torch.tanh(g_xm + g_c2))
        o_t = torch.tanh(o_x + o_h + o_c + self.conv_om(m_new))
        h_new = o_t * torch.tanh(self.conv_last(torch.cat((c_new, m_new), 1)))
        return h_new, c_new, m_new


class GHU(nn.Module):
    """Gradient highway unit: z <- u * tanh(p) + (1 - u) * z, with (p, u) from convolutions of the
    input and of z."""

    def __init__(self, in_channel: int, num_hidden: int, height: int, width: int, filter_size: int, stride: int,
                 layer_norm: bool):
        super().__init__()
        self.num_hidden = num_hidden
        if layer_norm:
            # the reference normalises [num_hidden, H, W] after a 2*num_hidden-channel convolution,
            # which cannot run; every reference config has layer_norm = 0
            raise UserError("PredRNN++'s gradient highway has no working layer-norm variant in the reference; "
                            "use --no-layer-norm")
        self.z_concat = gate_conv(in_channel, num_hidden * 2, filter_size, stride, False, height, width)
        self.x_concat = gate_conv(in_channel, num_hidden * 2, filter_size, stride, False, height, width)
        for conv in (self.z_concat[0], self.x_concat[0]):
            nn.init.uniform_(conv.weight, -GHU_INIT_RANGE, GHU_INIT_RANGE)

    def forward(self, x, z):
        if z is None:
            z = torch.zeros_like(x)
        p, u = torch.split(self.x_concat(x) + self.z_concat(z), self.num_hidden, dim=1)
        u = torch.sigmoid(u)
        return u * torch.tanh(p) + (1 - u) * z


class PredRNNpp(Recurrent):
    def __init__(self, *, in_len: int, out_len: int, channels: int, height: int, width: int, num_hidden: list[int],
                 filter_size: int, stride: int, layer_norm: bool, patch_size: int, sampling,
                 quantizer: str = "none", quantizer_kwargs: dict | None = None):
        super().__init__()
        if len(num_hidden) < 2:
            raise UserError(f"PredRNN++ needs rnn-layers >= 2 (its gradient highway sits between the first two), "
                            f"got {len(num_hidden)}")
        self.in_len, self.out_len, self.patch_size, self.sampling = in_len, out_len, patch_size, sampling
        hp, wp, self.frame_channel = frame_grid(height, width, channels, patch_size)
        self.num_layers, self.num_hidden = len(num_hidden), list(num_hidden)
        self.gradient_highway = GHU(num_hidden[0], num_hidden[0], hp, wp, filter_size, stride, layer_norm)
        self.cell_list = nn.ModuleList(
            CausalLSTMCell(self.frame_channel if i == 0 else num_hidden[i - 1], num_hidden[i], hp, wp,
                           filter_size, stride, layer_norm) for i in range(self.num_layers))
        self.conv_last = nn.Conv2d(num_hidden[-1], self.frame_channel, kernel_size=1, stride=1, padding=0, bias=False)
        self.init_quantizer(quantizer, num_hidden[-1], quantizer_kwargs)

    def rollout(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        frames = frames.permute(0, 1, 4, 2, 3)
        mask = mask.permute(0, 1, 4, 2, 3)
        b, t_total, _, h, w = frames.shape
        h_t = [frames.new_zeros(b, n, h, w) for n in self.num_hidden]
        c_t = [frames.new_zeros(b, n, h, w) for n in self.num_hidden]
        memory = frames.new_zeros(b, self.num_hidden[0], h, w)
        z_t, x_gen, next_frames = None, None, []
        for t in range(t_total - 1):
            net = step_input(self.sampling, self.in_len, t, frames, mask, x_gen)
            h_t[0], c_t[0], memory = self.cell_list[0](net, h_t[0], c_t[0], memory)
            z_t = self.gradient_highway(h_t[0], z_t)
            h_t[1], c_t[1], memory = self.cell_list[1](z_t, h_t[1], c_t[1], memory)
            for i in range(2, self.num_layers):
                h_t[i], c_t[i], memory = self.cell_list[i](h_t[i - 1], h_t[i], c_t[i], memory)
            x_gen = self.conv_last(self.quantize(h_t[-1]))
            next_frames.append(x_gen)
        return torch.stack(next_frames, 1).permute(0, 1, 3, 4, 2)


def build(cfg, shape) -> PredRNNpp:
    from svqbench.quantizers import quantizer_kwargs
    return PredRNNpp(in_len=shape.in_len, out_len=shape.out_len, channels=shape.channels, height=shape.height,
                     width=shape.width, num_hidden=[cfg.rnn_hidden] * cfg.rnn_layers, filter_size=cfg.filter_size,
                     stride=cfg.stride, layer_norm=cfg.layer_norm, patch_size=cfg.patch_size,
                     sampling=sampling_of(cfg, "scheduled"), quantizer=cfg.quantizer,
                     quantizer_kwargs=quantizer_kwargs(cfg))


def _scales(paper: dict) -> dict:
    return {"paper": paper, "quick": dict(QUICK_RNN, patch_size=paper["patch_size"])}


# From OpenSTL's configs/<folder>/PredRNNpp.py (values a config omits: OpenSTL's defaults).
PRESETS: dict[str, dict[str, dict]] = {
    # weather/t2m_5_625 has no PredRNNpp.py in the reference snapshot read: r_5_625's (the same
    # architecture as configs/weather/PredRNNpp.py and the t2m PredRNN/PredRNNv2 configs)
    "weatherbench-s-t2m": _scales(reference_preset(2, 5e-4, schedule="cosine")),
    "weatherbench-s-r": _scales(reference_preset(2, 5e-4, schedule="cosine")),     # weather/r_5_625
    "weatherbench-s-uv10": _scales(reference_preset(2, 5e-4)),                     # weather/uv10_5_625
    "weatherbench-s-tcc": _scales(reference_preset(2, 1e-3, schedule="cosine")),   # weather/tcc_5_625
    "weatherbench-m": _scales(reference_preset(2, 1e-4, schedule="cosine")),       # weather/mv_4_s6_5_625
    "taxibj": _scales(reference_preset(2, 1e-4, schedule="cosine", warmup_epochs=5)),
    "kth": _scales(reference_preset(2, 1e-3)),
    "kitticaltech": _scales(reference_preset(2, 5e-3)),
    "human36m": _scales(reference_preset(4, 1e-4, schedule="cosine")),
    "default": {"paper": reference_preset(2, 5e-4, schedule="cosine"), "quick": dict(QUICK_RNN)},
}
