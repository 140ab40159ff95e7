"""OpenSTL's MidMetaNet: N_T MetaFormer blocks; the first reduces T*C -> hid_T, the last maps back."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from svqbench.models.translators.common import Conv1x1


class MetaBlock(nn.Module):
    def __init__(self, block: nn.Module, c_in: int, c_out: int):
        super().__init__()
        self.block = block
        self.reduction = Conv1x1(c_in, c_out) if c_in != c_out else nn.Identity()

    def forward(self, x):
        return self.reduction(self.block(x))


class MidMetaNet(nn.Module):
    """`make_block(dim, drop_path, layer_index)` builds one block working at `dim` channels."""

    def __init__(self, make_block: Callable[[int, float, int], nn.Module], *, channels_in: int, hidden: int,
                 depth: int, drop_path: float):
        super().__init__()
        if depth < 2:
            raise ValueError(f"translator depth (N_T) must be >= 2, got {depth}")
        dpr = torch.linspace(1e-2, drop_path, depth, device="cpu").tolist()
        dims = [channels_in] + [hidden] * (depth - 1) + [channels_in]
        # OpenSTL gives the last block the full drop_path, not the linspace value
        rates = dpr[:-1] + [drop_path]
        self.blocks = nn.Sequential(*[
            MetaBlock(make_block(dims[i], rates[i], i), dims[i], dims[i + 1]) for i in range(depth)])

    def forward(self, x):
        return self.blocks(x)
