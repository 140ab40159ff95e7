"""gSTA (SimVPv2): large-kernel gated spatial attention + MixMlp, layer scale 1e-2."""
from __future__ import annotations

from torch import nn

from svqbench.models.translators.common import Conv1x1, DropPath, MixMlp, NCHWConv2d, init_weights, layer_scale
from svqbench.models.translators.metanet import MidMetaNet


class AttentionModule(nn.Module):
    """DW 5x5 -> DW 7x7 dilation 3 -> 1x1 to 2C -> sigmoid gate."""

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, out_channels: int | None = None):
        super().__init__()
        d_k = 2 * dilation - 1
        dd_k = kernel_size // dilation + ((kernel_size // dilation) % 2 - 1)
        self.conv0 = nn.Conv2d(dim, dim, d_k, padding=(d_k - 1) // 2, groups=dim)
        self.conv_spatial = NCHWConv2d(dim, dim, dd_k, padding=dilation * (dd_k - 1) // 2, groups=dim,
                                      dilation=dilation)
        self.conv1 = Conv1x1(dim, 2 * dim if out_channels is None else out_channels)

    def forward(self, x):
        f, g = self.conv1(self.conv_spatial(self.conv0(x))).chunk(2, dim=1)
        return g.sigmoid() * f


class SpatialAttention(nn.Module):
    """1x1 -> GELU -> gating unit -> 1x1, plus the input. TAU passes its temporal gating unit."""

    def __init__(self, dim: int, kernel_size: int = 21, gating: type[nn.Module] = AttentionModule):
        super().__init__()
        self.proj_1 = Conv1x1(dim, dim)
        self.activation = nn.GELU()
        self.spatial_gating_unit = gating(dim, kernel_size)
        self.proj_2 = Conv1x1(dim, dim)

    def forward(self, x):
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


class GASubBlock(nn.Module):
    def __init__(self, dim: int, *, kernel_size: int = 21, mlp_ratio: float = 8.0, drop: float = 0.0,
                 drop_path: float = 0.0, attention: nn.Module | None = None):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim, kernel_size)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = MixMlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = layer_scale(dim)
        self.layer_scale_2 = layer_scale(dim)
        init_weights(self)
        if attention is not None:  # TAU swaps the attention after OpenSTL's init (it keeps torch defaults)
            self.attn = attention

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: GASubBlock(dim, mlp_ratio=mlp_ratio, drop_path=dp),
                      channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
