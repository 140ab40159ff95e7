"""Uniformer blocks: a convolutional block (DW 5x5 local aggregation, BatchNorm) where the width
changes, multi-head self-attention blocks (8 heads, LayerNorm, layer scale 1e-6) in between; every
block starts with a DW 3x3 position embedding."""
from __future__ import annotations

import torch
from torch import nn

from svqbench.models.translators.common import (Conv1x1, ConvMlp, DropPath, Mlp, SelfAttention, from_tokens,
                                                init_weights, to_tokens)
from svqbench.models.translators.metanet import MidMetaNet


class ConvBlock(nn.Module):
    def __init__(self, dim: int, *, mlp_ratio: float = 8.0, drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = Conv1x1(dim, dim)
        self.conv2 = Conv1x1(dim, dim)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop)
        init_weights(self)

    def forward(self, x):
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, *, mlp_ratio: float = 8.0, drop: float = 0.0, drop_path: float = 0.0,
                 heads: int = 8, init_value: float = 1e-6):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, qkv_bias=True, drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.gamma_1 = nn.Parameter(init_value * torch.ones(dim))
        self.gamma_2 = nn.Parameter(init_value * torch.ones(dim))
        init_weights(self, conv=False)

    def forward(self, x):
        h, w = x.shape[2:]
        x = to_tokens(x + self.pos_embed(x))
        x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x)))
        x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
        return from_tokens(x, h, w)


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    def make(dim, dp, i):
        # OpenSTL: attention where the block keeps its width and is not the first
        keeps_width = i < depth - 1 or channels_in == hidden
        block = AttentionBlock if i > 0 and keeps_width else ConvBlock
        return block(dim, mlp_ratio=mlp_ratio, drop_path=dp)
    return MidMetaNet(make, channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
