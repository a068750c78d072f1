"""Training images/second: a plain PyTorch loop against our trainer, same proxies, one run.

    python benchmarks/proxy_throughput.py [--device auto] [--epochs 2] [--images 4096] [--batch-size 256]
                                          [--profile] [--dry-run]

The proxies are a ResNet-style and an Inception-style genotype adapted to 32x32
CIFAR-shaped data (3 channels, 10 classes; random images, since only throughput
is measured), each about 30-100 MFLOPs (multiply-adds) per image.
Baseline: a DataLoader over per-image CPU augmentation (pad, random crop, flip),
fp32, contiguous tensors, a `loss.item()` per step as most loops log.
Ours: explorer.trial.trainer.train (data on the device, batched on-device augmentation,
channels_last, the device's precision (bf16 or fp16 autocast on CUDA, explorer.trial.device),
cudnn.benchmark off as in a search, no host sync in an epoch).
Both use the same recipe (SGD with Nesterov momentum, one-cycle, label smoothing). Both count images/s
at steady state: the first epoch (CUDA start-up, warm-up) is left out of runs of 2+ epochs, so give
enough images for an epoch to dwarf one step (e.g. --images 16384 --batch-size 256: 64 steps).
`--dry-run` checks the flags and exits (benchmarks/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import space
from explorer.base.settings import Recipe
from explorer.trial.data import Splits
from explorer.trial.device import device_name, precision_for
from explorer.trial.proxy import make_proxy
from explorer.trial.trainer import lr_factor, resolve_device, set_cpu_threads, train
from space.named import named

WIDTHS = (1.0, 0.75, 0.5, 0.375, 0.25, 0.1875, 0.125)


def cifar_shaped(n: int) -> Splits:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n + 512, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n + 512,), generator=g)
    return Splits("cifar-shaped", x[:n], y[:n], x[n:], y[n:], x[n:], y[n:], num_classes=10, in_channels=3,
                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), flip=True)


def proxies() -> list[tuple[str, space.Genotype, int]]:
    """Each classic at the widest proxy width that keeps it at or under 100 MFLOPs."""
    out = []
    for label, name in (("ResNet-style (resnet50)", "resnet50"), ("Inception-style (googlenet)", "googlenet")):
        for width in WIDTHS:
            g = make_proxy(named(name), 32, width=width, depth=2, classes=10)
            flops = space.complexity(g).flops
            if flops <= 100e6:
                out.append((f"{label} x{width}", g, flops))
                break
    return out


class Augmented(Dataset):
    """The usual CPU pipeline: one image at a time, pad, random crop, random flip, normalise."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, padding: int = 2):
        self.x, self.y, self.padding = x, y, padding

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].float().div_(255)
        p = self.padding
        padded = nn.functional.pad(img, (p, p, p, p), mode="reflect")
        dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
        img = padded[:, dy:dy + 32, dx:dx + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img - 0.5) / 0.25, self.y[i]


def baseline(model: nn.Module, data: Splits, recipe: Recipe, device: torch.device) -> float:
    loader = DataLoader(Augmented(data.train_x, data.train_y), batch_size=recipe.batch_size, shuffle=True,
                        drop_last=True, num_workers=4 if device.type == "cuda" else 0,
                        pin_memory=device.type == "cuda")
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.peak_lr, momentum=recipe.momentum, nesterov=True,
                          weight_decay=recipe.weight_decay)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    total = recipe.epochs * len(loader)
    step, images, seconds = 0, 0, 0.0
    for epoch in range(recipe.epochs):
        if epoch == 1:  # steady state, as the trainer counts it: the first epoch's warm-up left out
            images, seconds = 0, 0.0
        model.train()
        start = time.perf_counter()
        running = 0.0
        for x, y in loader:
            for group in opt.param_groups:
                group["lr"] = recipe.peak_lr * lr_factor(step, total, recipe.schedule)
            x, y = x.to(device), y.to(device)
            loss = criterion(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += loss.item()
            step += 1
            images += len(y)
        seconds += time.perf_counter() - start
    return images / seconds


def profile_ours(g: space.Genotype, data: Splits, recipe: Recipe, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    model = space.build(g)
    train(model, data, Recipe(**{**recipe.to_dict(), "epochs": 1}), device)  # warm up (CUDA start, allocator)
    with profile(activities=activities) as prof:
        train(model, data, Recipe(**{**recipe.to_dict(), "epochs": 1}), device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--profile", action="store_true", help="also print a torch.profiler table of our trainer")
    ap.add_argument("--dry-run", action="store_true", help="check the flags and exit")
    args = ap.parse_args()
    if args.dry_run:
        print(f"proxy_throughput: would train on {args.device}, {args.images} images, batch {args.batch_size}")
        return
    device = resolve_device(args.device)
    if device.type == "cpu":
        set_cpu_threads()
    data = cifar_shaped(args.images)
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size)
    name = device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"device: {name} ({precision_for(device)}); torch {torch.__version__}; {args.images} images of 3x32x32, "
          f"batch {args.batch_size}, {args.epochs} epochs (images/s at steady state: from the second epoch on)")
    for label, g, flops in proxies():
        torch.manual_seed(0)
        ours = train(space.build(g), data, recipe, device).train_images_per_s
        torch.manual_seed(0)
        base = baseline(space.build(g), data, recipe, device)
        print(f"{label:34s} {flops / 1e6:6.1f} MFLOPs  baseline {base:9.0f} img/s   ours {ours:9.0f} img/s   "
              f"ratio {ours / base:5.2f}x")
        if args.profile:
            profile_ours(g, data, recipe, device)


if __name__ == "__main__":
    main()
