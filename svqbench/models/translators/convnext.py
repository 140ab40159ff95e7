"""ConvNeXt blocks (timm ConvNeXtBlock with conv_mlp): DW 7x7 -> LayerNorm over channels -> 1x1 MLP,
layer scale 1e-6."""
from __future__ import annotations

from torch import nn

from svqbench.models.translators.common import ChannelLayerNorm, ConvMlp, DropPath, init_weights, layer_scale
from svqbench.models.translators.metanet import MidMetaNet


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, *, mlp_ratio: float = 8.0, drop_path: float = 0.0):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = ChannelLayerNorm(dim, eps=1e-6)
        self.mlp = ConvMlp(dim, int(mlp_ratio * dim))
        self.gamma = layer_scale(dim, 1e-6)
        self.drop_path = DropPath(drop_path)
        init_weights(self)

    def forward(self, x):
        return x + self.drop_path(self.gamma[:, None, None] * self.mlp(self.norm(self.conv_dw(x))))


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: ConvNeXtBlock(dim, mlp_ratio=mlp_ratio, drop_path=dp),
                      channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
