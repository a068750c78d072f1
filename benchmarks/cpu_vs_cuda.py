"""Does a proxy learn the same on CUDA as on CPU? One proxy on digits, several seeds on each device.

    python benchmarks/cpu_vs_cuda.py [--device cuda] [--seeds 3] [--genotype resnet50] [--epochs 4]

The proxy is search's (explorer.trial.proxy.make_proxy, explorer.trial.trainer.train, the trial's
seeding) at 16 px, width x0.5, repeats <= 1, batch 64, on digits' training split; the CPU trains in
fp32, the GPU in its own precision (explorer.trial.device.precision_for: bf16 or fp16). Data order
and initial weights are the same on both devices for a seed; the kernels' arithmetic is not, so the
accuracies differ run by run. The check: the difference of the two means is within noise, i.e. at
most twice its standard error (from the seeds' spread, and never below the binomial error of one
accuracy on the validation split). `--dry-run` checks the flags and exits (benchmarks/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import space
from explorer.base.settings import Recipe
from explorer.trial import data as datasets
from explorer.trial.candidate import trial_seed
from explorer.trial.device import device_name, precision_for
from explorer.trial.proxy import make_proxy
from explorer.trial.trainer import resolve_device, set_cpu_threads, train
from space.named import named


def accuracies(genotype: str, data, device: torch.device, seeds: int, epochs: int) -> list[float]:
    proxy = make_proxy(named(genotype), 16, width=0.5, depth=1, in_channels=data.in_channels,
                       classes=data.num_classes)
    found = []
    for seed in range(seeds):
        torch.manual_seed(trial_seed(0, seed))
        model = space.build(proxy, data.num_classes, data.in_channels)
        found.append(train(model, data, Recipe(epochs=epochs, batch_size=64, seed=seed), device).val_accuracy)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="the device compared with the CPU")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--genotype", default="resnet50")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--dry-run", action="store_true", help="check the flags and exit")
    args = ap.parse_args()
    if args.dry_run:
        print(f"cpu_vs_cuda: would compare {args.genotype} on cpu and {args.device}, {args.seeds} seeds")
        return
    other = resolve_device(args.device)
    set_cpu_threads()
    data = datasets.load("digits", resolution=16, seed=0)
    stderr = 1 / math.sqrt(len(data.val_y))  # the binomial error's ceiling (p = 0.5), one accuracy
    results = []
    for device in (torch.device("cpu"), other):
        started = time.perf_counter()
        results.append(accuracies(args.genotype, data, device, args.seeds, args.epochs))
        print(f"{device_name(device)} ({device}, {precision_for(device)}): "
              f"{', '.join(f'{a:.4f}' for a in results[-1])}  mean {statistics.mean(results[-1]):.4f}  "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    a, b = results
    spread = [statistics.stdev(r) if len(r) > 1 else 0.0 for r in (a, b)]
    se = math.sqrt(sum(max(s, stderr) ** 2 / len(r) for s, r in zip(spread, (a, b))))
    gap = statistics.mean(b) - statistics.mean(a)
    verdict = "within noise" if abs(gap) <= 2 * se else "OUTSIDE noise"
    print(f"{args.genotype} proxy on digits, {len(data.val_y)} validation images: {other} - cpu = {gap:+.4f} "
          f"(standard error {se:.4f}): {verdict}")


if __name__ == "__main__":
    main()
