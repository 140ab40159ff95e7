"""PredNet (Lotter et al., ICLR 2017, "Deep Predictive Coding Networks for Video Prediction and
Unsupervised Learning"), as OpenSTL builds it (openstl/models/prednet_model.py, methods/prednet.py):
a stack of layers, each with representation units R (a ConvLSTM with the reference's hard sigmoid,
slope 0.2), a prediction Ahat = act(conv(R)), and error units E = [relu(Ahat - A), relu(A - Ahat)];
E feeds the next layer's target A = maxpool(relu(conv(E))) and, with the upsampled R from above,
the next step's R. The bottom Ahat (relu, clipped at pixel_max 1) is the predicted frame. Attribute
names follow the reference (ModuleLists i, f, c, o, A, Ahat) so its state dicts load by name.

Training as the reference's method: the whole sequence (inputs and targets) is fed as true frames,
and the loss is the error units' mean activity, weighted per layer (L_0: the bottom layer only;
L_all: 1 and 0.1) and per step (0 for the first step, 1 / (T - 1) after). That loss is all the
reference trains on, so it comes back in `aux`, and the forecast returned in training (the
next-frame predictions of the target frames, made from true frames) is detached: the loop's forecast
loss is reported but adds no gradient. Forecasting (evaluation) is the reference's extrapolation:
from step in_len on, the model's own previous prediction stands in for the unseen frame.

Quantizer slot: the top layer's representation R (the most compressed latent, 1/2^(L-1) of the
frame), every step, before it is passed down and kept as state. Frames are edge-padded to a
multiple of 2^(L-1) and the forecast cropped back. The clipped-relu output (the reference's, for
[0, 1] video) cannot reach negative values of normalised data.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svqbench.models.recurrent import Recurrent, pad_frames

PIXEL_MAX = 1.0


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Keras' hard sigmoid, as the reference uses it (not torch's x/6 + 1/2)."""
    return torch.clamp(0.2 * x + 0.5, 0.0, 1.0)


class PredNet(Recurrent):
    def __init__(self, *, in_len: int, out_len: int, stack_sizes: tuple[int, ...], filt_size: int,
                 weight_mode: str, quantizer: str = "none", quantizer_kwargs: dict | None = None):
        super().__init__()
        self.in_len, self.out_len = in_len, out_len
        self.stack_sizes = self.R_stack_sizes = tuple(stack_sizes)
        self.num_layers = n = len(stack_sizes)
        self.multiple = 2 ** (n - 1)
        s, pad = self.stack_sizes, filt_size // 2
        # created in the reference's (sorted) order, registered in its order: i, f, c, o, A, Ahat
        layers: dict[str, list[nn.Module]] = {k: [] for k in ("A", "Ahat", "c", "f", "i", "o")}
        for l in range(n):
            layers["Ahat"] += [nn.Conv2d(s[l], s[l], filt_size, padding=pad), nn.ReLU()]
            if l < n - 1:
                layers["A"] += [nn.Conv2d(2 * s[l], s[l + 1], filt_size, padding=pad), nn.ReLU()]
        for gate in ("c", "f", "i", "o"):
            for l in range(n):
                cin = 3 * s[l] + (s[l + 1] if l < n - 1 else 0)   # R, E (2x), R from above
                layers[gate].append(nn.Conv2d(cin, s[l], filt_size, padding=pad))
        for name in ("i", "f", "c", "o", "A", "Ahat"):
            setattr(self, name, nn.ModuleList(layers[name]))
        for m in self.modules():   # the reference zeroes every conv bias
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)
        weights = [1.0] + [0.0 if weight_mode == "L_0" else 0.1] * (n - 1)
        self.register_buffer("layer_weights", torch.tensor(weights), persistent=False)
        self.init_quantizer(quantizer, s[-1], quantizer_kwargs)

    @property
    def passes(self) -> int:
        """A forecast runs the network once per frame of the sequence; Table 12 counts one such pass
        on Human3.6M (13.7G) and KTH (3.4G) (on TaxiBJ its 0.85G is four)."""
        return self.in_len + self.out_len

    def step(self, A, R, C, E):
        """One time step: top-down R/C update, bottom-up predictions and errors. Returns the frame
        prediction, the per-layer mean error (B, L) and the new state."""
        n = self.num_layers
        R_new, C_new = [None] * n, [None] * n
        R_up = None
        for l in reversed(range(n)):
            parts = [R[l], E[l]] + ([R_up] if l < n - 1 else [])
            inputs = torch.cat(parts, dim=1)
            i = hard_sigmoid(self.i[l](inputs))
            f = hard_sigmoid(self.f[l](inputs))
            c = torch.tanh(self.c[l](inputs))
            o = hard_sigmoid(self.o[l](inputs))
            C_new[l] = f * C[l] + i * c
            r = o * torch.tanh(C_new[l])
            R_new[l] = self.quantize(r) if l == n - 1 else r
            if l > 0:
                R_up = F.interpolate(R_new[l], scale_factor=2, mode="nearest")
        E_new, errors, frame = [], [], None
        for l in range(n):
            Ahat = self.Ahat[2 * l + 1](self.Ahat[2 * l](R_new[l]))
            if l == 0:
                Ahat = torch.clamp(Ahat, max=PIXEL_MAX)
                frame = Ahat
            e = torch.cat([F.relu(Ahat - A), F.relu(A - Ahat)], dim=1)
            E_new.append(e)
            errors.append(e.flatten(1).mean(dim=1))
            if l < n - 1:
                A = F.max_pool2d(self.A[2 * l + 1](self.A[2 * l](e)), 2)
        return frame, torch.stack(errors, dim=1), (R_new, C_new, E_new)

    def forward(self, x, *, target=None, step=None, generator=None):
        b, t_in, c, h, w = x.shape
        training = target is not None and step is not None
        seq = pad_frames(torch.cat([x, target.to(x.dtype)], 1) if training else x, self.multiple)
        hp, wp = seq.shape[-2:]
        zeros = lambda ch, l: x.new_zeros(b, ch, hp >> l, wp >> l)  # noqa: E731
        R = [zeros(s, l) for l, s in enumerate(self.R_stack_sizes)]
        C = [zeros(s, l) for l, s in enumerate(self.R_stack_sizes)]
        E = [zeros(2 * s, l) for l, s in enumerate(self.stack_sizes)]
        self._aux = []
        total = t_in + self.out_len
        preds, loss, prev = [], x.new_zeros(()), None
        for t in range(total):
            # extrapolation (forecasting): past the inputs, the previous prediction is the "actual"
            A = seq[:, t] if (training or t < t_in) else prev
            prev, err, (R, C, E) = self.step(A, R, C, E)
            if t >= t_in:
                preds.append(prev)
            if training and t > 0:
                loss = loss + (err * self.layer_weights).sum(dim=1).mean() / (total - 1)
        pred = torch.stack(preds, dim=1)[..., :h, :w]
        aux = torch.stack(self._aux).mean() if self._aux else x.new_zeros(())
        if training:
            return pred.detach(), aux + loss
        return pred, aux


def parse_sizes(text: str, name: str) -> tuple[int, ...]:
    """"32,64,128" -> (32, 64, 128); a one-line error naming the field otherwise."""
    from svqbench.errors import UserError
    try:
        sizes = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise UserError(f"{name} must be comma-separated positive integers (e.g. 32,64,128), got {text!r}")
    return sizes


def build(cfg, shape) -> PredNet:
    from svqbench.errors import UserError
    from svqbench.quantizers import quantizer_kwargs
    sizes = parse_sizes(cfg.prednet_stack_sizes, "prednet-stack-sizes")
    if cfg.prednet_filt_size % 2 == 0:
        raise UserError(f"prednet-filt-size must be odd, got {cfg.prednet_filt_size}")
    return PredNet(in_len=shape.in_len, out_len=shape.out_len, stack_sizes=(shape.channels, *sizes),
                   filt_size=cfg.prednet_filt_size, weight_mode=cfg.prednet_weight_mode, quantizer=cfg.quantizer,
                   quantizer_kwargs=quantizer_kwargs(cfg))


# configs/<dataset>/PredNet.py: stack sizes (C, 32, 64, 128, 256), all filters 3, L_0, pixel_max 1;
# OpenSTL's default lr 1e-3 unless the config sets one.
_PAPER = dict(prednet_stack_sizes="32,64,128,256", prednet_filt_size=3, prednet_weight_mode="L_0", batch_size=16,
              loss="l2", quantizer="none", warmup_epochs=0)
# quick: three layers (8, 16 channels above the frame), 8 epochs (about 70 steps on the embedded data)
_QUICK = dict(prednet_stack_sizes="8,16", prednet_filt_size=3, prednet_weight_mode="L_0", loss="l2", quantizer="none",
              lr=1e-3, epochs=8)
PRESETS: dict[str, dict[str, dict]] = {
    "kth": {"paper": dict(_PAPER, lr=1e-3, schedule="onecycle"), "quick": _QUICK},
    "kitticaltech": {"paper": dict(_PAPER, lr=1e-3, schedule="onecycle"), "quick": _QUICK},
    "human36m": {"paper": dict(_PAPER, lr=1e-4, schedule="cosine", warmup_epochs=0), "quick": _QUICK},
    "taxibj": {"paper": dict(_PAPER, lr=1e-3, schedule="onecycle"), "quick": _QUICK},  # OpenSTL defaults
    "default": {"paper": dict(_PAPER, lr=1e-3, schedule="onecycle"), "quick": _QUICK},
}
