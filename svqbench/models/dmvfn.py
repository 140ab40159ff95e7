"""DMVFN (Hu et al., CVPR 2023, "A Dynamic Multi-Scale Voxel Flow Network for Video Prediction"), as
OpenSTL builds it (openstl/models/dmvfn_model.py, modules/dmvfn_modules.py, methods/dmvfn.py): from
two frames, a routing module picks (Bernoulli, straight-through) which of 9 multi-scale voxel-flow
blocks (MVFB) run; each refines two backward flows and a blend mask; the next frame is the
mask-blend of the two warped frames, clipped to [0, 1]. Attribute names follow the reference (stu,
routing, l1) so its state dicts load by name.

Training as the reference's method: every consecutive triplet (frame i, i+1 -> i+2) of the whole
sequence, true frames throughout; loss per triplet = sum over blocks of the Laplacian-pyramid L1
of that block's frame, weighted gamma^(blocks - 1 - block). svqbench differs in two places, said in
docs/models.md: (1) the reference takes one optimiser step per triplet; here the triplets are one
batch and `aux` is their mean loss (one step per batch, as for every model); (2) the reference adds
a VGG-19 perceptual term (coef 0.5) that needs ImageNet weights and 3-channel images; it is left
out. `aux` is the model's whole objective, so the training forecast (the last block's frame for
each target, from true frames) is detached: the loop's forecast loss is reported, not trained on.
Forecasting rolls out from the last two inputs, feeding back each prediction. The reference draws
the routing at random at test time too (using the first sample's draw for the whole batch); here a
block runs for a sample when its routing probability is >= 0.5, so a forecast is deterministic.

No quantizer slot: DMVFN carries no latent state (each step maps two frames to flows), so
`--quantizer` other than none is refused. Frames are edge-padded to a multiple of 4 x the largest
scale (16: the coarsest block works at 1/16), the forecast cropped back; the loss's pyramid keeps the
reference's 5 levels where the frame holds them (128 x 128: 5; TaxiBJ's 32 x 32: 4).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svqbench.models.recurrent import Recurrent, pad_frames

LAP_LEVELS = 5
GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def conv(cin, cout, kernel_size=3, stride=1, padding=1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.PReLU(cout))


class Routing(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.routing = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return self.routing(x)


class MVFB(nn.Module):
    """One multi-scale voxel-flow block: (frames, warped frames, mask; flow) -> (flow update, mask update)."""

    def __init__(self, in_planes, num_feature):
        super().__init__()
        self.conv0 = nn.Sequential(conv(in_planes, num_feature // 2, 3, 2, 1), conv(num_feature // 2, num_feature, 3, 2, 1))
        self.convblock = nn.Sequential(conv(num_feature, num_feature), conv(num_feature, num_feature),
                                       conv(num_feature, num_feature))
        self.conv_sq = conv(num_feature, num_feature // 4)
        self.conv1 = nn.Sequential(conv(in_planes, 8, 3, 2, 1))
        self.convblock1 = nn.Sequential(conv(8, 8))
        self.lastconv = nn.ConvTranspose2d(num_feature // 4 + 8, 5, 4, 2, 1)

    def forward(self, x, flow, scale):
        x0, flow0 = x, flow
        if scale != 1:
            x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
            flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
        x1 = self.conv0(torch.cat((x, flow), 1))
        x2 = self.conv_sq(self.convblock(x1) + x1)
        x2 = F.interpolate(x2, scale_factor=scale * 2, mode="bilinear", align_corners=False)
        x4 = self.convblock1(self.conv1(torch.cat((x0, flow0), 1)))
        out = self.lastconv(torch.cat((x2, x4), dim=1))
        return out[:, :4], out[:, 4:5]


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp by a flow in pixels (x, y), bilinear, border padding (the reference's)."""
    b, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    grid = torch.cat([xs + flow[:, 0:1] / ((img.shape[3] - 1.0) / 2.0),
                      ys + flow[:, 1:2] / ((img.shape[2] - 1.0) / 2.0)], 1).permute(0, 2, 3, 1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)


def pyramid_levels(h: int, w: int) -> int:
    """Levels of the loss's pyramid a frame holds: at most the reference's 5, each level's sides even
    (the upsampled band must match) and the last level's at least 3 (reflect padding by 2)."""
    levels = 0
    while (levels < LAP_LEVELS and h % 2 ** (levels + 1) == 0 and w % 2 ** (levels + 1) == 0
           and min(h, w) // 2 ** levels >= 3):
        levels += 1
    return max(levels, 1)


def laplacian_l1(a: torch.Tensor, b: torch.Tensor, levels: int = LAP_LEVELS) -> torch.Tensor:
    """The reference's LapLoss: sum over pyramid levels of the mean |difference| of the band-pass
    images (5x5 binomial blur, reflect padding, decimation by 2, zero-insertion upsampling)."""
    c = a.shape[1]
    kernel = (GAUSS[:, None] * GAUSS[None, :] / 256.0).to(a)[None, None].expand(c, 1, 5, 5)
    blur = lambda x, k: F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=c)  # noqa: E731
    total = a.new_zeros(())
    cur = torch.cat([a, b], 0)   # both pyramids in one pass
    for _ in range(levels):
        down = blur(cur, kernel)[:, :, ::2, ::2]
        up = torch.zeros_like(cur)
        up[:, :, ::2, ::2] = down
        band = cur - blur(up, 4 * kernel)
        total = total + F.l1_loss(*band.chunk(2, 0))
        cur = down
    return total


class DMVFN(Recurrent):
    def __init__(self, *, in_len: int, out_len: int, channels: int, num_features: tuple[int, ...],
                 scales: tuple[int, ...], routing_out_channels: int, beta: float, gamma: float):
        super().__init__()
        self.in_len, self.out_len, self.input_C = in_len, out_len, channels
        self.scales, self.beta, self.gamma = tuple(scales), beta, gamma
        self.multiple = 4 * max(scales)   # the coarsest block halves its 1/scale input twice
        self.num_block = len(num_features)
        in_planes = 4 * channels + 1 + 4   # 2 frames, 2 warped frames, mask, 2 flows
        self.stu = nn.ModuleList(MVFB(in_planes, f) for f in num_features)
        self.routing = Routing(2 * channels, routing_out_channels)
        self.l1 = nn.Linear(routing_out_channels, self.num_block)
        self.init_quantizer("none", channels, None)

    @property
    def passes(self) -> int:
        """A forecast runs the network once per output frame; Table 12 counts one such pass
        (KTH 0.88G, KittiCaltech 1.2G, TaxiBJ 0.057G)."""
        return self.out_len

    def routing_probs(self, pair: torch.Tensor) -> torch.Tensor:
        """Per sample and block, the probability that the block runs (B, num_block)."""
        v = torch.sigmoid(self.l1(self.routing(pair).flatten(1)))
        v = self.beta * self.num_block * v / (v.sum(1, keepdim=True) + 1e-6)
        return torch.clamp(v, 0, 1)

    def blocks(self, img0, img1, ref, every_block: bool):
        """Run the blocks on a batch of frame pairs with routing weights `ref` (B, num_block).
        every_block: the reference's training output (each block's frame, from its unrouted update,
        the last from the routed flow); else the final frame alone."""
        b, _, h, w = img0.shape
        flow, mask = img0.new_zeros(b, 4, h, w), img0.new_zeros(b, 1, h, w)
        warped0, warped1 = img0, img1
        frames = []
        for i, block in enumerate(self.stu):
            flow_d, mask_d = block(torch.cat((img0, img1, warped0, warped1, mask), 1), flow, self.scales[i])
            r = ref[:, i].view(b, 1, 1, 1)
            if every_block and i < self.num_block - 1:
                f_now, m_now = flow + flow_d, torch.sigmoid(mask + mask_d)
                frames.append(warp(img0, f_now[:, :2]) * m_now + warp(img1, f_now[:, 2:4]) * (1 - m_now))
            flow, mask = flow + flow_d * r, mask + mask_d * r
            warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
        m = torch.sigmoid(mask)
        frames.append(warped0 * m + warped1 * (1 - m))
        return [torch.clamp(f, 0, 1) for f in frames]

    def forward(self, x, *, target=None, step=None, generator=None):
        b, t_in, c, h, w = x.shape
        training = target is not None and step is not None
        if training:
            seq = pad_frames(torch.cat([x, target.to(x.dtype)], 1), self.multiple)
            n = seq.shape[1]
            # every triplet (i, i+1 -> i+2) as one batch, ordered (triplet, sample)
            img0 = seq[:, :n - 2].transpose(0, 1).flatten(0, 1)
            img1 = seq[:, 1:n - 1].transpose(0, 1).flatten(0, 1)
            gt = seq[:, 2:].transpose(0, 1).flatten(0, 1)
            p = self.routing_probs(torch.cat([img0, img1], 1))
            hard = (torch.rand(p.shape, generator=generator).to(p.device) < p).to(p.dtype)
            ref = p + (hard - p).detach()   # Bernoulli forward, identity gradient (the reference's RoundSTE)
            frames = self.blocks(img0, img1, ref, every_block=True)
            levels = pyramid_levels(*gt.shape[-2:])
            loss = sum(laplacian_l1(f, gt, levels) * self.gamma ** (self.num_block - 1 - i)
                       for i, f in enumerate(frames))
            last = frames[-1].unflatten(0, (n - 2, b)).transpose(0, 1)   # (B, n-2, C, H, W)
            pred = last[:, t_in - 2:, :, :h, :w].detach()
            return pred, loss
        img0, img1 = pad_frames(x[:, -2], self.multiple), pad_frames(x[:, -1], self.multiple)
        preds = []
        for _ in range(self.out_len):
            ref = (self.routing_probs(torch.cat([img0, img1], 1)) >= 0.5).to(x.dtype)
            frame = self.blocks(img0, img1, ref, every_block=False)[-1]
            # no block chosen: the reference returns the older frame
            frame = torch.where(ref.sum(1).view(-1, 1, 1, 1) > 0, frame, img0)
            preds.append(frame)
            img0, img1 = img1, frame
        return torch.stack(preds, 1)[..., :h, :w], x.new_zeros(())


def build(cfg, shape) -> DMVFN:
    from svqbench.errors import UserError
    from svqbench.models.prednet import parse_sizes
    if cfg.quantizer != "none":
        raise UserError(f"dmvfn has no latent state to quantize (it maps two frames to flows); use --quantizer none, "
                        f"not {cfg.quantizer!r}")
    if shape.in_len < 2:
        raise UserError(f"dmvfn predicts from the last two input frames; this dataset has {shape.in_len}")
    features = parse_sizes(cfg.dmvfn_num_features, "dmvfn-num-features")
    scales = parse_sizes(cfg.dmvfn_scales, "dmvfn-scales")
    if len(scales) != len(features) or any(s not in (1, 2, 4, 8) for s in scales):
        raise UserError(f"dmvfn-scales needs one of 1, 2, 4, 8 per block ({len(features)} blocks), "
                        f"got {cfg.dmvfn_scales!r}")
    if min(features) < 4:
        raise UserError(f"dmvfn-num-features must be >= 4 (a block squeezes to a quarter), got {cfg.dmvfn_num_features!r}")
    return DMVFN(in_len=shape.in_len, out_len=shape.out_len, channels=shape.channels, num_features=features,
                 scales=scales, routing_out_channels=cfg.dmvfn_routing_channels, beta=cfg.dmvfn_beta,
                 gamma=cfg.dmvfn_gamma)


# configs/<dataset>/DMVFN.py: 9 blocks 160x3, 80x3, 44x3 at scales 4, 2, 1; routing 32; beta 0.5,
# gamma 0.8 (coef 0.5: the VGG term, left out). The loss is its own (not the loop's l1/l2).
_PAPER = dict(dmvfn_num_features="160,160,160,80,80,80,44,44,44", dmvfn_scales="4,4,4,2,2,2,1,1,1",
              dmvfn_routing_channels=32, dmvfn_beta=0.5, dmvfn_gamma=0.8, quantizer="none", batch_size=16,
              warmup_epochs=0)
# quick: 3 narrow blocks, one per scale, 4 epochs (about 36 steps on the embedded data; each step
# trains on every triplet of the 15-frame windows, 13 x the batch)
_QUICK = dict(dmvfn_num_features="16,8,8", dmvfn_scales="4,2,1", dmvfn_routing_channels=16, dmvfn_beta=0.5,
              dmvfn_gamma=0.8, quantizer="none", lr=1e-3, epochs=4)
PRESETS: dict[str, dict[str, dict]] = {
    "kth": {"paper": dict(_PAPER, lr=5e-5, schedule="onecycle"), "quick": _QUICK},
    "kitticaltech": {"paper": dict(_PAPER, lr=1e-3, schedule="onecycle"), "quick": _QUICK},   # lr: default
    "taxibj": {"paper": dict(_PAPER, lr=5e-4, schedule="cosine", warmup_epochs=5), "quick": _QUICK},
    "default": {"paper": dict(_PAPER, lr=1e-3, schedule="onecycle"), "quick": _QUICK},
}
