"""Score a model, and the reference forecasts, on one split in physical units (streaming)."""
from __future__ import annotations

import numpy as np
import torch

from svqbench.config import RunConfig
from svqbench.data.prepared import PreparedDataset
from svqbench.metrics import ErrorAccumulator
from svqbench.train import to_tensors


def _accumulator(ds: PreparedDataset) -> ErrorAccumulator:
    return ErrorAccumulator(ds.out_len, ds.lat)


@torch.no_grad()
def evaluate_model(model, ds: PreparedDataset, cfg: RunConfig, *, split: str = "test",
                   device: torch.device = torch.device("cpu")) -> dict:
    model.eval().to(device)
    acc = _accumulator(ds)
    for batch in ds.batches(split, cfg.batch_size):
        x, _, offset = to_tensors(ds, batch, cfg.norm, device)
        pred, _ = model(x)
        phys = ds.denormalise(pred.float().cpu().numpy(), offset.cpu().numpy())
        acc.update(torch.from_numpy(phys), torch.from_numpy(np.asarray(batch.y)))
    return acc.result()


def evaluate_references(ds: PreparedDataset, *, split: str = "test", batch_size: int = 64) -> dict[str, dict]:
    """persistence: repeat the last input frame; climatology: the train mean of each grid cell."""
    pers, clim = _accumulator(ds), _accumulator(ds)
    climatology = torch.from_numpy(ds.climatology)
    for batch in ds.batches(split, batch_size):
        y = torch.from_numpy(np.asarray(batch.y))
        last = torch.from_numpy(np.asarray(batch.x[:, -1:]))
        pers.update(last.expand_as(y), y)
        clim.update(climatology.expand_as(y), y)
    return {"persistence": pers.result(), "climatology": clim.result()}
