"""MLP-Mixer blocks (timm MixerBlock): token-mixing MLP over the H*W positions (hidden dim/2) and a
channel MLP, LayerNorm eps 1e-6. The token MLP fixes the latent grid size at construction."""
from __future__ import annotations

from torch import nn

from svqbench.models.translators.common import DropPath, Mlp, from_tokens, init_weights, to_tokens
from svqbench.models.translators.metanet import MidMetaNet


class MixerBlock(nn.Module):
    def __init__(self, dim: int, input_resolution: tuple[int, int], *, mlp_ratio: float = 8.0, drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = Mlp(input_resolution[0] * input_resolution[1], int(0.5 * dim), drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, int(mlp_ratio * dim), drop)
        init_weights(self)

    def forward(self, x):
        h, w = x.shape[2:]
        x = to_tokens(x)
        x = x + self.drop_path(self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        x = x + self.drop_path(self.mlp_channels(self.norm2(x)))
        return from_tokens(x, h, w)


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: MixerBlock(dim, input_resolution, mlp_ratio=mlp_ratio, drop_path=dp),
                      channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
