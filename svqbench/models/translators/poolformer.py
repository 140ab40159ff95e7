"""PoolFormer blocks: GroupNorm(1) -> (avg-pool 3x3 - x) token mixer, GroupNorm(1) -> 1x1 MLP,
layer scale 1e-5."""
from __future__ import annotations

from torch import nn

from svqbench.models.translators.common import ConvMlp, DropPath, init_weights, layer_scale
from svqbench.models.translators.metanet import MidMetaNet


class Pooling(nn.Module):
    def __init__(self, pool_size: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x):
        return self.pool(x) - x


class PoolFormerBlock(nn.Module):
    def __init__(self, dim: int, *, mlp_ratio: float = 8.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.token_mixer = Pooling(3)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path)
        self.layer_scale_1 = layer_scale(dim, 1e-5)
        self.layer_scale_2 = layer_scale(dim, 1e-5)
        init_weights(self, conv=False)
        for conv in (self.mlp.fc1, self.mlp.fc2):  # PoolFormer's Mlp: trunc_normal(0.02) on its 1x1 convs
            nn.init.trunc_normal_(conv.weight, std=0.02)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.token_mixer(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: PoolFormerBlock(dim, mlp_ratio=mlp_ratio, drop_path=dp),
                      channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
