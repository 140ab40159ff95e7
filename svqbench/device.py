"""The device a command runs on, checked once the same way by every command that takes --device
(`run`, `evaluate`, `analyze`, `predict`, `export`, `load_run`), before anything is downloaded,
prepared or created. A module of its own, below its users, so none of them imports another for it."""
from __future__ import annotations

from svqbench.errors import UserError


def check_device(device: str) -> None:
    """A device torch knows and this machine has; a one-line UserError otherwise."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise UserError(f"--device {device}: svqbench runs on cpu or cuda")
