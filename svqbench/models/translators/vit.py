"""ViT blocks (timm Block): pre-norm multi-head self-attention over all H*W positions (8 heads, no
position embedding) + MLP."""
from __future__ import annotations

from torch import nn

from svqbench.models.translators.common import DropPath, Mlp, SelfAttention, from_tokens, init_weights, to_tokens
from svqbench.models.translators.metanet import MidMetaNet


class ViTBlock(nn.Module):
    def __init__(self, dim: int, *, mlp_ratio: float = 8.0, drop: float = 0.0, drop_path: float = 0.0,
                 heads: int = 8):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, qkv_bias=True, drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        init_weights(self)

    def forward(self, x):
        h, w = x.shape[2:]
        x = to_tokens(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return from_tokens(x, h, w)


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: ViTBlock(dim, mlp_ratio=mlp_ratio, drop_path=dp),
                      channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
