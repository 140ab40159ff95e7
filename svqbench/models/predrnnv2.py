"""PredRNN.V2 (Wang et al., 2022), as OpenSTL builds it (openstl/models/predrnnv2_model.py): PredRNN's
cells plus a shared 1x1 `adapter` through which the per-step increments of the temporal memory
(delta_c) and of the spatiotemporal memory (delta_m) are compared; the decoupling loss (the mean
absolute cosine similarity of the two, over layers and steps, weighted by `decouple_beta`) pushes
the two memories apart. Trained with reverse scheduled sampling: over the input frames the model is
fed its own predictions with a probability that falls from 0.5 to 0, over the future frames the true
frames with a probability that falls from 0.5 to 0.

Quantizer slot: the top layer's hidden state before `conv_last`, at every step (as PredRNN).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svqbench.models.recurrent import Recurrent, sampling_of
from svqbench.models.st_lstm import (QUICK_RNN, SpatioTemporalLSTMCell, frame_grid, reference_preset,
                                     step_input)


class PredRNNv2(Recurrent):
    def __init__(self, *, in_len: int, out_len: int, channels: int, height: int, width: int, num_hidden: list[int],
                 filter_size: int, stride: int, layer_norm: bool, patch_size: int, sampling, decouple_beta: float,
                 quantizer: str = "none", quantizer_kwargs: dict | None = None):
        super().__init__()
        self.in_len, self.out_len, self.patch_size, self.sampling = in_len, out_len, patch_size, sampling
        self.decouple_beta = decouple_beta
        hp, wp, self.frame_channel = frame_grid(height, width, channels, patch_size)
        self.num_layers, self.num_hidden = len(num_hidden), list(num_hidden)
        # OpenSTL's SpatioTemporalLSTMCellv2 has exactly these layers and names
        self.cell_list = nn.ModuleList(
            SpatioTemporalLSTMCell(self.frame_channel if i == 0 else num_hidden[i - 1], num_hidden[i], hp, wp,
                                   filter_size, stride, layer_norm) for i in range(self.num_layers))
        self.conv_last = nn.Conv2d(num_hidden[-1], self.frame_channel, kernel_size=1, stride=1, padding=0, bias=False)
        self.adapter = nn.Conv2d(num_hidden[0], num_hidden[0], 1, stride=1, padding=0, bias=False)
        self.init_quantizer(quantizer, num_hidden[-1], quantizer_kwargs)
        self._decouple = None

    def _unit(self, delta: torch.Tensor) -> torch.Tensor:
        """The adapted increment, L2-normalised over the pixels of each channel: (B, C, H*W)."""
        return F.normalize(self.adapter(delta).flatten(2), dim=2)

    def rollout(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        frames = frames.permute(0, 1, 4, 2, 3)
        mask = mask.permute(0, 1, 4, 2, 3)
        b, t_total, _, h, w = frames.shape
        h_t = [frames.new_zeros(b, n, h, w) for n in self.num_hidden]
        c_t = [frames.new_zeros(b, n, h, w) for n in self.num_hidden]
        memory = frames.new_zeros(b, self.num_hidden[0], h, w)
        x_gen, next_frames, similarity = None, [], []
        for t in range(t_total - 1):
            net = step_input(self.sampling, self.in_len, t, frames, mask, x_gen)
            for i, cell in enumerate(self.cell_list):
                h_t[i], c_t[i], memory, delta_c, delta_m = cell(net if i == 0 else h_t[i - 1], h_t[i], c_t[i], memory)
                # per layer and step: mean over batch and channels of |cos| between the two increments
                similarity.append(torch.cosine_similarity(self._unit(delta_c), self._unit(delta_m), dim=2).abs().mean())
            x_gen = self.conv_last(self.quantize(h_t[-1]))
            next_frames.append(x_gen)
        self._decouple = torch.stack(similarity).mean()
        return torch.stack(next_frames, 1).permute(0, 1, 3, 4, 2)

    def extra_loss(self, next_frames: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """decouple_beta x the decoupling loss of the last rollout (training only: the loop's forward
        calls this only when it passes the target and the step)."""
        return self.decouple_beta * self._decouple


def build(cfg, shape) -> PredRNNv2:
    from svqbench.quantizers import quantizer_kwargs
    return PredRNNv2(in_len=shape.in_len, out_len=shape.out_len, channels=shape.channels, height=shape.height,
                     width=shape.width, num_hidden=[cfg.rnn_hidden] * cfg.rnn_layers, filter_size=cfg.filter_size,
                     stride=cfg.stride, layer_norm=cfg.layer_norm, patch_size=cfg.patch_size,
                     sampling=sampling_of(cfg, "reverse"), decouple_beta=cfg.decouple_beta,
                     quantizer=cfg.quantizer, quantizer_kwargs=quantizer_kwargs(cfg))


def _scales(paper: dict) -> dict:
    return {"paper": paper, "quick": dict(QUICK_RNN, patch_size=paper["patch_size"], decouple_beta=paper["decouple_beta"])}


def _ref(patch: int, lr: float, beta: float = 0.1, **kw) -> dict:
    return reference_preset(patch, lr, decouple_beta=beta, **kw)


# From OpenSTL's configs/<folder>/PredRNNv2.py (values a config omits: OpenSTL's defaults).
PRESETS: dict[str, dict[str, dict]] = {
    "weatherbench-s-t2m": _scales(_ref(2, 5e-4, schedule="cosine")),   # weather/t2m_5_625
    "weatherbench-s-r": _scales(_ref(2, 1e-3, schedule="cosine")),     # weather/r_5_625
    "weatherbench-s-uv10": _scales(_ref(2, 5e-4)),                     # weather/uv10_5_625
    "weatherbench-s-tcc": _scales(_ref(2, 1e-3)),                      # weather/tcc_5_625
    "weatherbench-m": _scales(_ref(2, 5e-4, schedule="cosine")),       # weather/mv_4_s6_5_625
    "taxibj": _scales(_ref(2, 5e-4, schedule="cosine", warmup_epochs=5)),
    "kth": _scales(_ref(2, 1e-3, beta=0.01)),
    "kitticaltech": _scales(_ref(2, 1e-3)),
    "human36m": _scales(_ref(4, 1e-4, schedule="cosine")),
    "default": {"paper": _ref(2, 5e-4, schedule="cosine"), "quick": dict(QUICK_RNN, decouple_beta=0.1)},
}
