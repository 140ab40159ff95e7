"""PhyDNet (Le Guen & Thome, CVPR 2020, "Disentangling Physical Dynamics from Unknown Factors for
Unsupervised Video Prediction"), as OpenSTL builds it (openstl/models/phydnet_model.py,
openstl/modules/phydnet_modules.py): a conv encoder to 1/patch_size of the frame (64 channels), two
branches — PhyCell (a physically constrained cell whose 7x7 filters are pushed towards finite-
difference operators by a moment loss) and a 3-layer ConvLSTM — added in a shared decoder, with a
sigmoid output. The reference's sizes are constants of its model (encoding 64, ConvLSTM 128,128,64;
only patch_size 2 or 4 varies between configs); svqbench makes the two widths fields for quick scale.
Attribute names follow the reference (phycell and convcell appear both at the top and inside
`encoder`, as there), so its state dicts load by name.

Training as the reference's method:
- the encoder phase predicts each next input frame; the forecast phase starts from the last input
  and feeds either its own prediction or (teacher forcing, one coin per batch) the true frame;
- loss = sum of the per-frame MSEs (input and forecast phases) + the moment loss: for each of the 64
  input channels, MSE between the moments of PhyCell's 49 filters (`K2M`) and the 49 unit moments.
  The loop's forecast loss is the mean over the out_len frames, so `aux` carries the rest divided by
  out_len (the reference's loss / out_len in total; the input phase with the loop's criterion).
- the teacher-forcing probability falls linearly per optimiser step (`Sampling("scheduled")`); the
  reference lowers it per epoch, max(0, 1 - 0.003 epoch), so the paper presets use 0.003 / (steps per
  epoch) of the dataset.
Evaluation forecasts from the inputs alone.

Quantizer slot: the frame encoding (encoder_E's output, 64 channels at 1/patch_size), every step,
before it splits into the physical and residual branches. Frames are edge-padded to a multiple of
patch_size and the forecast cropped back. The sigmoid output (the reference's, for [0, 1] video)
cannot reach values outside (0, 1) of normalised data: OpenSTL's weather numbers for PhyDNet show it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svqbench.models.recurrent import Recurrent, Sampling, pad_frames, sampling_of, teacher_forcing_prob

PHY_HIDDEN, PHY_KERNEL = 49, 7  # PhyCell: F_hidden_dims [49], kernel 7x7 (49 moments); never varies


class K2M(nn.Module):
    """Moments of a convolution kernel: for a (..., k1, k2) kernel, m = M0 k M1^T with
    M[i, j] = (j - (k - 1) // 2)^i / i!, the discrete moments of order (i1, i2) about the centre.
    The buffers keep the reference's names (_M0, _invM0, ...) in float64, so its state dicts load."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        for j, size in enumerate(self.shape):
            order = torch.arange(size, dtype=torch.float64, device="cpu")[:, None]
            offset = torch.arange(size, dtype=torch.float64, device="cpu")[None, :] - (size - 1) // 2
            m = offset ** order / torch.exp(torch.lgamma(order + 1))
            self.register_buffer(f"_M{j}", m)
            self.register_buffer(f"_invM{j}", torch.linalg.inv(m))

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        m0, m1 = self._M0.to(k), self._M1.to(k)
        return m0 @ k @ m1.transpose(0, 1)


class dcgan_conv(nn.Module):
    def __init__(self, nin, nout, stride):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(nin, nout, 3, stride=stride, padding=1), nn.GroupNorm(16, nout),
                                  nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.main(x)


class dcgan_upconv(nn.Module):
    def __init__(self, nin, nout, stride):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nin, nout, 3, stride=stride, padding=1, output_padding=1 if stride == 2 else 0),
            nn.GroupNorm(16, nout), nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.main(x)


class encoder_E(nn.Module):
    """Frame -> 64 channels at 1/patch_size (stride 2, then 1, then patch_size / 2)."""

    def __init__(self, nc, patch_size, nf=32):
        super().__init__()
        self.c1 = dcgan_conv(nc, nf, 2)
        self.c2 = dcgan_conv(nf, nf, 1)
        self.c3 = dcgan_conv(nf, 2 * nf, patch_size // 2)

    def forward(self, x):
        return self.c3(self.c2(self.c1(x)))


class decoder_D(nn.Module):
    def __init__(self, nc, patch_size, nf=32):
        super().__init__()
        stride = patch_size // 2
        self.upc1 = dcgan_upconv(2 * nf, nf, 2)
        self.upc2 = dcgan_upconv(nf, nf, 1)
        self.upc3 = nn.ConvTranspose2d(nf, nc, 3, stride=stride, padding=1, output_padding=1 if stride == 2 else 0)

    def forward(self, x):
        return self.upc3(self.upc2(self.upc1(x)))


class encoder_specific(nn.Module):
    def __init__(self, nc, nf):
        super().__init__()
        self.c1 = dcgan_conv(nc, nf, 1)
        self.c2 = dcgan_conv(nf, nf, 1)

    def forward(self, x):
        return self.c2(self.c1(x))


class decoder_specific(nn.Module):
    def __init__(self, nc, nf):
        super().__init__()
        self.upc1 = dcgan_upconv(nf, nf, 1)
        self.upc2 = dcgan_upconv(nf, nc, 1)

    def forward(self, x):
        return self.upc2(self.upc1(x))


class PhyCell_Cell(nn.Module):
    """Physical prediction h~ = h + F(h) (F: 7x7 conv, GroupNorm, 1x1), then a gated correction by the input."""

    def __init__(self, input_dim, F_hidden_dim, kernel_size):
        super().__init__()
        self.input_dim = input_dim
        self.F = nn.Sequential()
        self.F.add_module("conv1", nn.Conv2d(input_dim, F_hidden_dim, kernel_size, padding=kernel_size // 2))
        self.F.add_module("bn1", nn.GroupNorm(7, F_hidden_dim))
        self.F.add_module("conv2", nn.Conv2d(F_hidden_dim, input_dim, 1))
        self.convgate = nn.Conv2d(2 * input_dim, input_dim, 3, padding=1)

    def forward(self, x, hidden):
        gain = torch.sigmoid(self.convgate(torch.cat([x, hidden], dim=1)))
        predicted = hidden + self.F(hidden)
        return predicted + gain * (x - predicted)


class PhyCell(nn.Module):
    def __init__(self, input_dim, F_hidden_dims, kernel_size):
        super().__init__()
        self.cell_list = nn.ModuleList(PhyCell_Cell(input_dim, f, kernel_size) for f in F_hidden_dims)

    def forward(self, x, H: list[torch.Tensor]) -> list[torch.Tensor]:
        new = []
        for j, cell in enumerate(self.cell_list):
            new.append(cell(x if j == 0 else new[j - 1], H[j]))
        return new


class PhyD_ConvLSTM_Cell(nn.Module):
    def __init__(self, input_dim, hidden_dim, kernel_size):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.conv = nn.Conv2d(input_dim + hidden_dim, 4 * hidden_dim, kernel_size, padding=kernel_size // 2)

    def forward(self, x, h, c):
        i, f, o, g = torch.split(self.conv(torch.cat([x, h], dim=1)), self.hidden_dim, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class PhyD_ConvLSTM(nn.Module):
    def __init__(self, input_dim, hidden_dims, kernel_size):
        super().__init__()
        self.hidden_dims = list(hidden_dims)
        self.cell_list = nn.ModuleList(
            PhyD_ConvLSTM_Cell(input_dim if i == 0 else hidden_dims[i - 1], h, kernel_size)
            for i, h in enumerate(hidden_dims))

    def forward(self, x, H, C):
        newH, newC = [], []
        for j, cell in enumerate(self.cell_list):
            h, c = cell(x if j == 0 else newH[j - 1], H[j], C[j])
            newH.append(h)
            newC.append(c)
        return newH, newC


class PhyD_EncoderRNN(nn.Module):
    """One step: encode, quantize (the slot), both branches, decode their sum."""

    def __init__(self, phycell, convcell, in_channel, patch_size, latent):
        super().__init__()
        self.encoder_E = encoder_E(in_channel, patch_size, latent // 2)
        self.encoder_Ep = encoder_specific(latent, latent)
        self.encoder_Er = encoder_specific(latent, latent)
        self.decoder_Dp = decoder_specific(latent, latent)
        self.decoder_Dr = decoder_specific(latent, latent)
        self.decoder_D = decoder_D(in_channel, patch_size, latent // 2)
        self.phycell = phycell
        self.convcell = convcell

    def forward(self, frame, state, quantize):
        H_phys, H, C = state
        z = quantize(self.encoder_E(frame))
        H_phys = self.phycell(self.encoder_Ep(z), H_phys)
        H, C = self.convcell(self.encoder_Er(z), H, C)
        decoded = self.decoder_Dp(H_phys[-1]) + self.decoder_Dr(H[-1])
        return torch.sigmoid(self.decoder_D(decoded)), (H_phys, H, C)


class PhyDNet(Recurrent):
    def __init__(self, *, in_len: int, out_len: int, channels: int, patch_size: int, sampling: Sampling,
                 latent: int = 64, lstm_hidden: tuple[int, ...] = (128, 128, 64), quantizer: str = "none",
                 quantizer_kwargs: dict | None = None):
        super().__init__()
        self.in_len, self.out_len, self.patch_size, self.sampling = in_len, out_len, patch_size, sampling
        self.latent, self.lstm_hidden = latent, tuple(lstm_hidden)
        self.phycell = PhyCell(latent, [PHY_HIDDEN], PHY_KERNEL)
        self.convcell = PhyD_ConvLSTM(latent, self.lstm_hidden, 3)
        self.encoder = PhyD_EncoderRNN(self.phycell, self.convcell, channels, patch_size, latent)
        self.k2m = K2M((PHY_KERNEL, PHY_KERNEL))
        self.init_quantizer(quantizer, latent, quantizer_kwargs)

    def moment_loss(self) -> torch.Tensor:
        """Sum over PhyCell's input channels (64) of the MSE between the moments of its 49 7x7 filters
        and the unit moments (filter i*7 + j -> moment (i, j) alone), as the reference computes it."""
        weight = self.phycell.cell_list[0].F.conv1.weight            # (49, latent, 7, 7)
        moments = self.k2m(weight.double().transpose(0, 1)).float()  # (latent, 49, 7, 7)
        unit = torch.eye(PHY_KERNEL * PHY_KERNEL, device=weight.device).reshape(-1, PHY_KERNEL, PHY_KERNEL)
        return ((moments - unit) ** 2).mean(dim=(1, 2, 3)).sum()

    def _initial_state(self, b, h, w, like):
        zeros = lambda c: like.new_zeros(b, c, h, w)  # noqa: E731
        return ([zeros(self.latent) for _ in self.phycell.cell_list], [zeros(c) for c in self.lstm_hidden],
                [zeros(c) for c in self.lstm_hidden])

    def forward(self, x, *, target=None, step=None, generator=None):
        b, t_in, c, h, w = x.shape
        training = target is not None and step is not None
        xp = pad_frames(x, self.patch_size)
        yp = pad_frames(target.to(x.dtype), self.patch_size) if training else None
        state = self._initial_state(b, xp.shape[-2] // self.patch_size, xp.shape[-1] // self.patch_size, x)
        self._aux = []
        crit = F.mse_loss if self.loss_name == "l2" else F.l1_loss
        input_phase = x.new_zeros(())
        for t in range(t_in - 1):
            out, state = self.encoder(xp[:, t], state, self.quantize)
            if training:
                input_phase = input_phase + crit(out[..., :h, :w], x[:, t + 1])
        teacher = False
        if training:  # one coin per batch, as the reference draws it
            teacher = bool(torch.rand((), generator=generator) < teacher_forcing_prob(self.sampling, step))
        frame, preds = xp[:, -1], []
        for t in range(self.out_len):
            out, state = self.encoder(frame, state, self.quantize)
            preds.append(out)
            frame = yp[:, t] if teacher else out
        pred = torch.stack(preds, dim=1)[..., :h, :w]
        aux = torch.stack(self._aux).mean() if self._aux else x.new_zeros(())
        if training:
            aux = aux + (input_phase + self.moment_loss()) / self.out_len
        return pred, aux


def build(cfg, shape) -> PhyDNet:
    from svqbench.errors import UserError
    from svqbench.quantizers import quantizer_kwargs
    from svqbench.models.prednet import parse_sizes
    if cfg.patch_size not in (2, 4):
        raise UserError(f"phydnet takes patch-size 2 or 4 (its encoder's down-sampling), got {cfg.patch_size}")
    if cfg.phydnet_latent < 32 or cfg.phydnet_latent % 32:
        raise UserError(f"phydnet-latent must be a multiple of 32 (its group norms: 16 groups of half of it), "
                        f"got {cfg.phydnet_latent}")
    lstm_hidden = parse_sizes(cfg.phydnet_lstm_hidden, "phydnet-lstm-hidden")
    if lstm_hidden[-1] != cfg.phydnet_latent:  # its output is added to PhyCell's, in the encoding's width
        raise UserError(f"phydnet-lstm-hidden's last width must equal phydnet-latent {cfg.phydnet_latent} (the "
                        f"two branches are summed), got {cfg.phydnet_lstm_hidden}")
    return PhyDNet(in_len=shape.in_len, out_len=shape.out_len, channels=shape.channels, patch_size=cfg.patch_size,
                   sampling=sampling_of(cfg, "scheduled"), latent=cfg.phydnet_latent,
                   lstm_hidden=lstm_hidden, quantizer=cfg.quantizer,
                   quantizer_kwargs=quantizer_kwargs(cfg))


def _paper(patch_size: int, steps_per_epoch: int, **training) -> dict:
    """configs/<dataset>/PhyDNet.py: patch_size and training settings; OpenSTL trains with MSE. Teacher
    forcing 1 - 0.003 per epoch, spread over the epoch's optimiser steps."""
    return {**dict(patch_size=patch_size, phydnet_latent=64, phydnet_lstm_hidden="128,128,64",
                   sampling_start_value=1.0, sampling_changing_rate=0.003 / steps_per_epoch,
                   sampling_stop_iter=10**9, batch_size=16, loss="l2", quantizer="none", warmup_epochs=0), **training}


# quick: encoding 32, ConvLSTM 32,32,32 (about 7x fewer MACs), 8 epochs (about 70 steps on the
# embedded data); teacher forcing fades out over the first 60 steps
_QUICK = dict(patch_size=4, phydnet_latent=32, phydnet_lstm_hidden="32,32,32", sampling_start_value=1.0,
              sampling_changing_rate=1 / 60, sampling_stop_iter=60, loss="l2", quantizer="none", lr=1e-3, epochs=8)
# steps per epoch at batch 16: WeatherBench-S 3284 (every 1-hour window, docs/reference.md), TaxiBJ
# 20461 windows -> 1279. For the video datasets and the default the count is ASSUMED (not read from
# the reference): 5200 (KTH), 2600 (KittiCaltech), 4600 (Human3.6M), 1000; it only sets how slowly
# teacher forcing decays (after 100 epochs the reference still forces 70% of the batches).
PRESETS: dict[str, dict[str, dict]] = {
    "weatherbench-s-t2m": {"paper": _paper(2, 3284, lr=1e-3, schedule="cosine", warmup_epochs=0), "quick": _QUICK},
    "weatherbench-s-r": {"paper": _paper(2, 3284, lr=1e-4, schedule="cosine", warmup_epochs=0), "quick": _QUICK},
    "weatherbench-s-uv10": {"paper": _paper(2, 3284, lr=1e-3, schedule="cosine", warmup_epochs=0), "quick": _QUICK},
    "weatherbench-s-tcc": {"paper": _paper(2, 3284, lr=1e-3, schedule="cosine", warmup_epochs=0), "quick": _QUICK},
    "taxibj": {"paper": _paper(2, 1279, lr=1e-3, schedule="cosine", warmup_epochs=5), "quick": dict(_QUICK, patch_size=2)},
    "kth": {"paper": _paper(4, 5200, lr=1e-3, schedule="onecycle"), "quick": _QUICK},
    "kitticaltech": {"paper": _paper(4, 2600, lr=1e-3, schedule="onecycle"), "quick": _QUICK},
    "human36m": {"paper": _paper(4, 4600, lr=1e-3, schedule="onecycle"), "quick": _QUICK},
    "default": {"paper": _paper(4, 1000, lr=1e-3, schedule="onecycle"), "quick": _QUICK},
}
