"""ConvMixer blocks (kernel 11): x + BN(GELU(DW conv)), then BN(GELU(1x1 conv)) with no residual.

OpenSTL's block ignores mlp_ratio and drop_path."""
from __future__ import annotations

from torch import nn

from svqbench.models.translators.common import Conv1x1, init_weights
from svqbench.models.translators.metanet import MidMetaNet


class ConvMixerBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int = 11):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same")
        self.act_1 = nn.GELU()
        self.norm_1 = nn.BatchNorm2d(dim)
        self.conv_pw = Conv1x1(dim, dim)
        self.act_2 = nn.GELU()
        self.norm_2 = nn.BatchNorm2d(dim)
        init_weights(self)

    def forward(self, x):
        x = x + self.norm_1(self.act_1(self.conv_dw(x)))
        return self.norm_2(self.act_2(self.conv_pw(x)))


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0):
    return MidMetaNet(lambda dim, dp, i: ConvMixerBlock(dim), channels_in=channels_in, hidden=hidden, depth=depth,
                      drop_path=drop_path)
