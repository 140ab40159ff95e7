"""Swin blocks (timm SwinTransformerBlock as OpenSTL uses it): window attention with a learned
relative-position bias, 8 heads, window 7 when H is a multiple of 7 else max(4, H // 16), at most 8;
odd blocks cyclically shift by half a window.

As in OpenSTL, shifted windows are attended WITHOUT the shift mask, so tokens that wrap around the
border attend to each other (harmless for longitude, which is periodic)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svqbench.models.translators.common import DropPath, Mlp, SelfAttention, init_weights
from svqbench.models.translators.metanet import MidMetaNet


def window_size_for(input_resolution: tuple[int, int]) -> int:
    h = input_resolution[0]
    return min(8, 7 if h % 7 == 0 else max(4, h // 16))


def relative_position_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


class SwinBlock(nn.Module):
    def __init__(self, dim: int, input_resolution: tuple[int, int], *, layer_index: int, mlp_ratio: float = 8.0,
                 drop: float = 0.0, drop_path: float = 0.0, heads: int = 8):
        super().__init__()
        ws = window_size_for(input_resolution)
        shift = 0 if layer_index % 2 == 0 else ws // 2
        if min(input_resolution) <= ws:  # timm: one window covers the map, no shift
            ws, shift = min(input_resolution), 0
        self.window, self.shift, self.heads = ws, shift, heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, qkv_bias=True, drop=drop)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(ws).flatten(), persistent=False)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        init_weights(self)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x):
        b, c, h, w = x.shape
        ws = self.window
        shortcut = x.permute(0, 2, 3, 1)
        y = self.norm1(shortcut)
        pad_h, pad_w = (-h) % ws, (-w) % ws
        if pad_h or pad_w:
            y = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        windows = y.reshape(b, hp // ws, ws, wp // ws, ws, c).transpose(2, 3).reshape(-1, ws * ws, c)
        bias = self.relative_position_bias_table[self.relative_position_index]
        bias = bias.reshape(ws * ws, ws * ws, self.heads).permute(2, 0, 1)
        y = self.attn(windows, bias)
        y = y.reshape(b, hp // ws, wp // ws, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = shortcut + self.drop_path(y[:, :h, :w])
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: SwinBlock(dim, input_resolution, layer_index=i, mlp_ratio=mlp_ratio,
                                                   drop_path=dp),
                      channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path)
