"""Speed of the streaming video metric set (target: 10,000 frames of 128 x 128 in < 30 s on 2 cores,
LPIPS excluded).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/metrics_speed.py [--frames 10000] [--threads 1] [--lpips]

Scores (B, T, 1, 128, 128) batches through exactly what `evaluate` runs for a video dataset:
per-frame and per-pixel MSE/MAE/RMSE with per-lead curves, SSIM and PSNR. Prints the time, frames
per second, and two ratios measured in the same run, which stay meaningful on a machine that other
jobs load: skimage's `structural_similarity` called frame by frame (the reference code's loop),
timed on frames interleaved with ours, against our SSIM + PSNR; and the cost in units of one
float64 pass over the same frames.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--lead", type=int, default=10, help="frames per sample (T)")
    parser.add_argument("--batch", type=int, default=16, help="samples per batch (B)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lpips", action="store_true", help="also time LPIPS on 200 frames (needs AlexNet weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from skimage.metrics import structural_similarity

    from svqbench.metrics import ErrorAccumulator, ImageQualityAccumulator

    b, t, s = args.batch, args.lead, args.size
    n_batches = -(-args.frames // (b * t))
    gen = torch.Generator().manual_seed(0)
    # a pool of distinct batches, cycled: the cost of the metrics does not depend on the values
    pool = [(torch.rand(b, t, 1, s, s, generator=gen), torch.rand(b, t, 1, s, s, generator=gen)) for _ in range(4)]

    errors, image = ErrorAccumulator(t, per_frame=True), ImageQualityAccumulator(t)
    t_errors = t_image = t_skimage = 0.0
    skimage_frames = 0
    for i in range(n_batches):
        pred, true = pool[i % len(pool)]
        start = time.perf_counter()
        errors.update(pred, true)
        t_errors += time.perf_counter() - start
        start = time.perf_counter()
        image.update(pred, true)
        t_image += time.perf_counter() - start
        if i % 4 == 0:  # the reference loop on a few frames of the same batch, interleaved so both see the same load
            p = pred.reshape(-1, s, s)[:8].double().numpy()
            q = true.reshape(-1, s, s)[:8].double().numpy()
            start = time.perf_counter()
            for a, c in zip(p, q):
                structural_similarity(a, c, data_range=1)
            t_skimage += time.perf_counter() - start
            skimage_frames += len(p)
    result = {**errors.result(), **image.result()}
    elapsed = t_errors + t_image
    frames = n_batches * b * t

    # one float64 pass over the same frames (sum of squared differences), as a load-independent unit
    start = time.perf_counter()
    for i in range(n_batches):
        pred, true = pool[i % len(pool)]
        float((pred.double() - true.double()).square().sum())
    one_pass = time.perf_counter() - start
    skimage_per_frame = t_skimage / skimage_frames

    print(f"video metric set (MSE/MAE/RMSE per frame and per pixel, SSIM, PSNR, per lead), "
          f"{frames} frames of {s}x{s}, torch threads {args.threads}")
    print(f"  wall time            {elapsed:8.2f} s   ({frames / elapsed:,.0f} frames/s; target < 30 s for 10,000)")
    print(f"  extrapolated 10,000  {elapsed / frames * 10_000:8.2f} s")
    print(f"    errors (MSE/MAE/RMSE per frame + per pixel) {t_errors:.2f} s, SSIM + PSNR {t_image:.2f} s")
    print(f"  skimage SSIM loop    {skimage_per_frame * frames:8.2f} s for the same frames (SSIM alone; timed on "
          f"{skimage_frames} frames interleaved) -> ratio skimage SSIM / our SSIM+PSNR "
          f"{skimage_per_frame * frames / t_image:.2f}")
    print(f"  cost in float64 passes over the data: {elapsed / one_pass:.1f} "
          f"(one pass took {one_pass:.2f} s here)")
    print(f"  ssim {result['ssim']:.4f}  psnr {result['psnr']:.2f}  (random frames; a sanity check only)")

    if args.lpips:
        from svqbench.lpips_weights import build_lpips_alex, resolve_alexnet_weights
        from svqbench.metrics import LPIPSAccumulator
        acc = LPIPSAccumulator(t, build_lpips_alex(resolve_alexnet_weights()))
        pred, true = pool[0]
        n = max(1, 200 // t)
        start = time.perf_counter()
        acc.update(pred[:n], true[:n])
        took = time.perf_counter() - start
        print(f"  LPIPS (excluded from the target): {n * t / took:,.0f} frames/s -> "
              f"{10_000 * took / (n * t):.0f} s for 10,000 frames")


if __name__ == "__main__":
    main()
