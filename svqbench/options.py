"""How a run trains (not what): the runtime options recorded in config.json as `runtime`.

Kept free of torch so that `svqbench run --print-config` checks them without importing it."""
from __future__ import annotations

from dataclasses import dataclass

from svqbench.errors import UserError

DATA_ON_DEVICE = ("auto", "yes", "no")


PRECISIONS = ("fp32", "bf16", "fp16")
ADAMS = ("auto", "fused", "foreach", "for-loop")


@dataclass(frozen=True)
class TrainOptions:
    """How to train (not what): recorded in config.json as `runtime`, never in the leaderboard key.

    precision: fp32 | bf16 | fp16 autocast of the forward pass (fp32 master weights; fp16 adds a
    gradient scaler). checkpoint_every: optimiser steps between mid-epoch checkpoints (0 = only at
    epoch ends). resume: continue from the run folder's checkpoint instead of starting fresh.
    data_on_device: auto | yes | no, frames held on the device (svqbench.data.batches). log_every:
    optimiser steps between reads of the device-side loss sums (and progress reports). adam: auto
    (fused on CUDA, torch's for-loop on CPU) | fused | foreach | for-loop."""
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    checkpoint_every: int = 500
    resume: bool = False
    data_on_device: str = "auto"
    log_every: int = 50
    adam: str = "auto"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.checkpoint_every < 0:
            raise UserError(f"checkpoint-every must be >= 0 steps, got {self.checkpoint_every}")
        if self.data_on_device not in DATA_ON_DEVICE:
            raise UserError(f"unknown data-on-device {self.data_on_device!r}; choose one of: "
                            f"{', '.join(DATA_ON_DEVICE)}")
        if self.log_every < 1:
            raise UserError(f"log-every must be >= 1 step, got {self.log_every}")
        if self.adam not in ADAMS:
            raise UserError(f"unknown adam {self.adam!r}; choose one of: {', '.join(ADAMS)}")
