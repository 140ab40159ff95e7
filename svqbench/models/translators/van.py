"""VAN blocks: large-kernel attention (DW 5x5 -> DW 7x7 dilation 3 -> 1x1, multiplied with the input)
+ MixMlp, layer scale 1e-2."""
from __future__ import annotations

from torch import nn

from svqbench.models.translators.common import Conv1x1, DropPath, MixMlp, NCHWConv2d, init_weights, layer_scale
from svqbench.models.translators.metanet import MidMetaNet


class LKA(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = NCHWConv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = Conv1x1(dim, dim)

    def forward(self, x):
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class VANAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj_1 = Conv1x1(dim, dim)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LKA(dim)
        self.proj_2 = Conv1x1(dim, dim)

    def forward(self, x):
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


class VANBlock(nn.Module):
    def __init__(self, dim: int, *, mlp_ratio: float = 8.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = VANAttention(dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = MixMlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = layer_scale(dim, 1e-2)
        self.layer_scale_2 = layer_scale(dim, 1e-2)
        init_weights(self, linear=False)

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: VANBlock(dim, mlp_ratio=mlp_ratio, drop_path=dp),
                      channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
