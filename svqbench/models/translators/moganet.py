"""MogaNet blocks: multi-order gated aggregation (DW 5x5, dilated DW 5x5 / 7x7 on 3/8 and 4/8 of the
channels) + channel-aggregation FFN, layer scale 1e-5."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svqbench.models.translators.common import Conv1x1, DropPath, NCHWConv2d, init_weights
from svqbench.models.translators.metanet import MidMetaNet


class ChannelAggregationFFN(nn.Module):
    def __init__(self, dim: int, hidden: int, kernel_size: int = 3, drop: float = 0.0):
        super().__init__()
        self.fc1 = Conv1x1(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = Conv1x1(hidden, dim)
        self.drop = nn.Dropout(drop)
        self.decompose = Conv1x1(hidden, 1)
        self.sigma = nn.Parameter(1e-5 * torch.ones(1, hidden, 1, 1))
        self.decompose_act = nn.GELU()

    def forward(self, x):
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        x = x + self.sigma * (x - self.decompose_act(self.decompose(x)))
        return self.drop(self.fc2(x))


class MultiOrderDWConv(nn.Module):
    def __init__(self, dim: int, dilations=(1, 2, 3), split=(1, 3, 4)):
        super().__init__()
        if dim % sum(split):
            raise ValueError(f"MogaNet width {dim} must be divisible by {sum(split)}")
        self.dim_1 = int(split[1] / sum(split) * dim)
        self.dim_2 = int(split[2] / sum(split) * dim)
        self.dim_0 = dim - self.dim_1 - self.dim_2
        self.DW_conv0 = nn.Conv2d(dim, dim, 5, padding=(1 + 4 * dilations[0]) // 2, groups=dim,
                                  dilation=dilations[0])
        self.DW_conv1 = NCHWConv2d(self.dim_1, self.dim_1, 5, padding=(1 + 4 * dilations[1]) // 2, groups=self.dim_1,
                                  dilation=dilations[1])
        self.DW_conv2 = NCHWConv2d(self.dim_2, self.dim_2, 7, padding=(1 + 6 * dilations[2]) // 2, groups=self.dim_2,
                                  dilation=dilations[2])
        self.PW_conv = Conv1x1(dim, dim)

    def forward(self, x):
        x0, x1, x2 = torch.split(self.DW_conv0(x), (self.dim_0, self.dim_1, self.dim_2), dim=1)
        return self.PW_conv(torch.cat([x0, self.DW_conv1(x1), self.DW_conv2(x2)], dim=1))


class MultiOrderGatedAggregation(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj_1 = Conv1x1(dim, dim)
        self.gate = Conv1x1(dim, dim)
        self.value = MultiOrderDWConv(dim)
        self.proj_2 = Conv1x1(dim, dim)
        self.act = nn.SiLU()
        self.sigma = nn.Parameter(1e-5 * torch.ones(1, dim, 1, 1))

    def forward(self, x):
        shortcut = x
        x = self.proj_1(x)
        x = self.act(x + self.sigma * (x - F.adaptive_avg_pool2d(x, 1)))
        return self.proj_2(self.act(self.gate(x)) * self.act(self.value(x))) + shortcut


class MogaBlock(nn.Module):
    def __init__(self, dim: int, *, mlp_ratio: float = 8.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = MultiOrderGatedAggregation(dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ChannelAggregationFFN(dim, int(dim * mlp_ratio), drop=drop)
        self.layer_scale_1 = nn.Parameter(1e-5 * torch.ones(1, dim, 1, 1))
        self.layer_scale_2 = nn.Parameter(1e-5 * torch.ones(1, dim, 1, 1))
        init_weights(self, linear=False)

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2 * self.mlp(self.norm2(x)))


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: MogaBlock(dim, mlp_ratio=mlp_ratio, drop_path=dp),
                      channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
