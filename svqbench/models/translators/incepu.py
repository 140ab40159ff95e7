"""IncepU (SimVPv1): gInception blocks (1x1 reduction, then grouped convs with kernels 3/5/7/11 summed,
each with GroupNorm + LeakyReLU) arranged as a U-Net with skips. Torch default initialisation, as
OpenSTL's MidIncepNet."""
from __future__ import annotations

import torch
from torch import nn

from svqbench.models.translators.common import Conv1x1


class GroupConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int):
        super().__init__()
        if c_in % groups:
            groups = 1  # OpenSTL falls back to a dense conv
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups)
        self.norm = nn.GroupNorm(groups, c_out)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class GInception(nn.Module):
    def __init__(self, c_in: int, c_hid: int, c_out: int, kernels=(3, 5, 7, 11), groups: int = 8):
        super().__init__()
        self.conv1 = Conv1x1(c_in, c_hid)
        self.layers = nn.ModuleList([GroupConv(c_hid, c_out, k, groups) for k in kernels])

    def forward(self, x):
        x = self.conv1(x)
        y = self.layers[0](x)
        for layer in self.layers[1:]:
            y = y + layer(x)
        return y


class MidIncepNet(nn.Module):
    def __init__(self, *, channels_in: int, hidden: int, depth: int):
        super().__init__()
        if depth < 2:
            raise ValueError(f"translator depth (N_T) must be >= 2, got {depth}")
        half = hidden // 2
        self.enc = nn.ModuleList([GInception(channels_in, half, hidden)] +
                                 [GInception(hidden, half, hidden) for _ in range(depth - 1)])
        self.dec = nn.ModuleList([GInception(hidden, half, hidden)] +
                                 [GInception(2 * hidden, half, hidden) for _ in range(depth - 2)] +
                                 [GInception(2 * hidden, half, channels_in)])

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x)
            if i < len(self.enc) - 1:
                skips.append(x)
        x = self.dec[0](x)
        for block, skip in zip(self.dec[1:], reversed(skips)):
            x = block(torch.cat([x, skip], dim=1))
        return x


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidIncepNet(channels_in=channels_in, hidden=hidden, depth=depth)
