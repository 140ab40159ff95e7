"""TAU: gSTA with its spatial attention replaced by temporal attention (large-kernel attention times a
squeeze-excitation gate), plus the differential-divergence regulariser in the training loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svqbench.models.translators.gsta import AttentionModule, GASubBlock, SpatialAttention
from svqbench.models.translators.metanet import MidMetaNet


class TemporalAttentionModule(AttentionModule):
    """gSTA's DW 5x5 -> DW 7x7 dilation 3 -> 1x1 (to C, no sigmoid split), multiplied by an SE gate
    of the input and by the input."""

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3, reduction: int = 16):
        super().__init__(dim, kernel_size, dilation, out_channels=dim)
        squeezed = dim // max(dim // reduction, 4)
        self.fc = nn.Sequential(nn.Linear(dim, squeezed, bias=False), nn.ReLU(),
                                nn.Linear(squeezed, dim, bias=False), nn.Sigmoid())

    def forward(self, x):
        f = self.conv1(self.conv_spatial(self.conv0(x)))
        gate = self.fc(x.mean((2, 3)))[:, :, None, None]
        return gate * f * x


def differential_divergence(pred: torch.Tensor, target: torch.Tensor, tau: float = 0.1,
                            eps: float = 1e-12) -> torch.Tensor:
    """KL-like divergence between the softmax(/tau) of frame-to-frame differences of the forecast
    and of the target, over all C*H*W elements of a difference (OpenSTL `diff_div_reg`).
    Zero when there are fewer than 3 output frames."""
    b, t = pred.shape[:2]
    if t <= 2:
        return pred.new_zeros(())
    p = F.softmax((pred[:, 1:] - pred[:, :-1]).reshape(b, t - 1, -1) / tau, -1)
    q = F.softmax((target[:, 1:] - target[:, :-1]).reshape(b, t - 1, -1) / tau, -1)
    return (p * torch.log(p / (q + eps) + eps)).mean()


class TAU(MidMetaNet):
    """MidMetaNet of TAU blocks; `regularizer(pred, target)` is added to the training loss."""

    def __init__(self, make_block, *, divergence_weight: float = 0.1, **kwargs):
        super().__init__(make_block, **kwargs)
        self.divergence_weight = divergence_weight

    def regularizer(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.divergence_weight * differential_divergence(pred, target)


def build(*, channels_in, hidden, depth, input_resolution, drop_path=0.0, mlp_ratio=8.0, divergence_weight=0.1):
    return TAU(lambda dim, dp, i: GASubBlock(dim, mlp_ratio=mlp_ratio, drop_path=dp,
                                             attention=SpatialAttention(dim, gating=TemporalAttentionModule)),
               channels_in=channels_in, hidden=hidden, depth=depth, drop_path=drop_path,
               divergence_weight=divergence_weight)
