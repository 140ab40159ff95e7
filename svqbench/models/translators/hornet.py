"""HorNet blocks: recursive gated convolution (gnconv, order 4, DW 7x7) + channel MLP, layer scale 1e-6."""
from __future__ import annotations

import torch
from torch import nn

from svqbench.models.translators.common import ChannelLayerNorm, Conv1x1, DropPath, init_weights, layer_scale
from svqbench.models.translators.metanet import MidMetaNet


class GnConv(nn.Module):
    def __init__(self, dim: int, order: int = 4, scale: float = 1.0):
        super().__init__()
        self.dims = [dim // 2 ** i for i in range(order)][::-1]
        self.proj_in = Conv1x1(dim, 2 * dim)
        self.dwconv = nn.Conv2d(sum(self.dims), sum(self.dims), 7, padding=3, groups=sum(self.dims))
        self.proj_out = Conv1x1(dim, dim)
        self.pws = nn.ModuleList([Conv1x1(self.dims[i], self.dims[i + 1]) for i in range(order - 1)])
        self.scale = scale

    def forward(self, x):
        pwa, abc = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        dw = torch.split(self.dwconv(abc) * self.scale, self.dims, dim=1)
        x = pwa * dw[0]
        for pw, d in zip(self.pws, dw[1:]):
            x = pw(x) * d
        return self.proj_out(x)


class HorBlock(nn.Module):
    def __init__(self, dim: int, *, mlp_ratio: float = 8.0, drop_path: float = 0.0, order: int = 4):
        super().__init__()
        if dim % 2 ** (order - 1):
            raise ValueError(f"HorNet width {dim} must be divisible by {2 ** (order - 1)}")
        self.norm1 = ChannelLayerNorm(dim, eps=1e-6)
        self.gnconv = GnConv(dim, order)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, int(mlp_ratio * dim))
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(int(mlp_ratio * dim), dim)
        self.gamma1 = layer_scale(dim, 1e-6)
        self.gamma2 = layer_scale(dim, 1e-6)
        self.drop_path = DropPath(drop_path)
        init_weights(self)

    def forward(self, x):
        x = x + self.drop_path(self.gamma1[:, None, None] * self.gnconv(self.norm1(x)))
        y = self.gamma2 * self.pwconv2(self.act(self.pwconv1(self.norm2(x.permute(0, 2, 3, 1)))))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: HorBlock(dim, mlp_ratio=mlp_ratio, drop_path=dp),
                      channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
