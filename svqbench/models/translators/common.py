"""Small layers shared by several translator families (plain torch, shapes as in OpenSTL/timm)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at eval time or when rate is 0)."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Conv1x1(nn.Conv2d):
    """A 1x1 convolution; on channels-last input it runs as one matrix product over the (B, H, W, C)
    view, with no copy. Same parameters and state-dict keys as nn.Conv2d(c_in, c_out, 1).
    (On CPU, torch sends small-batch single-thread 1x1 convs to a slow im2col kernel.)"""

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__(c_in, c_out, 1, bias=bias)

    def forward(self, x):
        if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)


class NCHWConv2d(nn.Conv2d):
    """A Conv2d that computes a channels-last CPU input in NCHW layout and returns channels-last:
    oneDNN's dilated depthwise kernel is about 2x slower on channels-last tensors (the rest of a
    block about 1.4x faster). Other inputs pass straight through."""

    def forward(self, x):
        if x.device.type != "cpu" or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)


class MixMlp(nn.Module):
    """1x1 conv -> depthwise 3x3 -> GELU -> 1x1 conv (OpenSTL MixMlp, used by gSTA, TAU, VAN)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = Conv1x1(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = Conv1x1(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.dwconv(self.fc1(x))))))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear on the last dimension (timm Mlp)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ConvMlp(nn.Module):
    """1x1 conv -> GELU -> 1x1 conv on channels (PoolFormer Mlp, Uniformer CMlp, timm ConvMlp)."""

    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = Conv1x1(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = Conv1x1(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor (timm LayerNorm2d)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__(dim, eps=eps)

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens (B, N, C): qkv Linear -> softmax(qk^T/sqrt(d) + bias) v -> proj."""

    def __init__(self, dim: int, heads: int = 8, qkv_bias: bool = True, drop: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x, bias: torch.Tensor | None = None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).transpose(1, 2)


def from_tokens(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W)."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def layer_scale(dim: int, init: float = 1e-2) -> nn.Parameter:
    return nn.Parameter(init * torch.ones(dim))


def init_weights(module: nn.Module, *, linear: bool = True, conv: bool = True) -> None:
    """OpenSTL's block initialisation: Linear trunc_normal(0.02) and zero bias; Conv2d normal with
    std sqrt(2 / fan_out) and zero bias; norms weight 1, bias 0. `linear`/`conv` False leaves those
    layers at torch's defaults, as the corresponding OpenSTL block does."""
    for m in module.modules():
        if isinstance(m, nn.Linear) and linear:
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d) and conv:
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
