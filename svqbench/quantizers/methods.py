"""The paper's hard-VQ baselines as settings (Table 11): titles, codebook sizes, library keyword
arguments and the sizes each method can take. Free of torch, so that the config checks them
without building anything; `baselines.py` builds them."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from svqbench.errors import UserError

FSQ_LEVELS = (8, 5, 5, 3)
LFQ_COMMITMENT_WEIGHT = 0.25  # the library's default when the paper was written (0 since)


@dataclass(frozen=True)
class Method:
    title: str                  # the paper's name for it
    codebook_size: int | None   # Table 11 default (None: fixed by the FSQ levels)
    kwargs: dict = field(default_factory=dict)


METHODS: dict[str, Method] = {
    "vq": Method("VQ", 512, dict(decay=0.8, commitment_weight=1.0)),
    "rvq": Method("Residual VQ", 1024, dict(num_quantizers=8, shared_codebook=True)),
    "grvq": Method("Grouped Residual VQ", 1024, dict(num_quantizers=8, groups=2, shared_codebook=True)),
    "mhvq": Method("Multi-headed VQ", 1024, dict(heads=8, separate_codebook_per_head=False)),
    "rvq-stochastic": Method("Residual VQ (Stochastic)", 1024,
                             dict(num_quantizers=8, shared_codebook=True, stochastic_sample_codes=True,
                                  sample_codebook_temp=0.1)),
    "rfsq": Method("Residual FSQ", None, dict(levels=list(FSQ_LEVELS), num_quantizers=8)),
    "lfq": Method("LFQ", 8192, dict(entropy_loss_weight=0.1, diversity_gamma=1.0,
                                   commitment_loss_weight=LFQ_COMMITMENT_WEIGHT)),
    "rlfq": Method("Residual LFQ", 256, dict(num_quantizers=8, commitment_loss_weight=LFQ_COMMITMENT_WEIGHT)),
}
FSQ_CODEBOOK_SIZE = math.prod(FSQ_LEVELS)


def default_codebook_size(name: str) -> int:
    method = METHODS[name]
    return FSQ_CODEBOOK_SIZE if method.codebook_size is None else method.codebook_size


def check_codebook_size(method: str, codebook_size: int) -> None:
    """The sizes a method can take (checked when the config is resolved and when it is built)."""
    if method == "rfsq" and codebook_size != FSQ_CODEBOOK_SIZE:
        raise UserError(f"rfsq's codebook size is fixed by its levels {list(FSQ_LEVELS)} "
                        f"({FSQ_CODEBOOK_SIZE} codes per quantizer), got {codebook_size}; drop --codebook-size")
    if codebook_size < 2:
        raise UserError(f"codebook size must be >= 2, got {codebook_size}")
    if method in ("lfq", "rlfq") and not math.log2(codebook_size).is_integer():
        raise UserError(f"{method} needs a power-of-2 codebook size, got {codebook_size}; "
                        f"try {2 ** round(math.log2(codebook_size))}")
