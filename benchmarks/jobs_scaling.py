"""Trials per hour against `--jobs`: one study's throughput with 1, 2, 4 and 8 local workers.

    python benchmarks/jobs_scaling.py [--jobs 1,2,4,8] [--trials 16] [--epochs 2] [--device cpu]
                                      [--space residual] [--budget 2GFLOPs] [--dataset digits]
                                      [--batch-size N] [--proxy-width W] [--dry-run]

Runs `explore search --jobs N` in a scratch folder once per N, with the same
settings and seed, each run a fresh study that aims for the same number of
completed trials, and prints completed trials per hour of wall time and the
ratio to `--jobs 1`, measured side by side in this one run. Wall time covers the
whole command (start-up, reference points, training, the final report), as a
user waits for it. Each worker gets cores/N CPU threads, so on a CPU the gain
comes from tiny proxies not filling the cores; on one GPU from overlapping one
worker's data handling with another's kernels. On CUDA, make trials long enough to dwarf start-up
(more --epochs, a smaller --batch-size on digits' 1,600 training images); a new CUDA study gets the
GPU preset (explorer.base.settings.GPU_PROXY) unless the flags say otherwise. `--dry-run` checks the
flags and exits (benchmarks/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]


def measure(jobs: int, args, workdir: Path) -> dict:
    name = f"jobs{jobs}"
    command = [sys.executable, "-m", "cli", "search", "--budget", args.budget, "--space", args.space,
               "--trials", str(args.trials), "--epochs", str(args.epochs), "--seed", "0",
               "--device", args.device, "--study", name, "--jobs", str(jobs), "--dataset", args.dataset]
    command += [arg for flag, value in (("--batch-size", args.batch_size), ("--proxy-width", args.proxy_width))
                if value is not None for arg in (flag, str(value))]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    subprocess.run(command, cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/studies/{name}/study.db")
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return {"wall": wall, "completed": len(done), "per_hour": 3600 * len(done) / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", default="1,2,4,8", help="comma-separated worker counts; the first is the baseline")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--space", default="residual")
    p.add_argument("--budget", default="2GFLOPs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--batch-size", type=int, help="[default: the device's preset]")
    p.add_argument("--proxy-width", type=float, help="[default: the device's preset]")
    p.add_argument("--dry-run", action="store_true", help="check the flags and exit")
    args = p.parse_args()
    counts = [int(j) for j in args.jobs.split(",")]
    if args.dry_run:
        print(f"jobs_scaling: would run --jobs {', '.join(map(str, counts))} on {args.device}")
        return

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {args.device}; {args.dataset}, {args.space} space, {args.budget} (multiply-adds), "
          f"{args.trials} completed trials of {args.epochs} epochs per run")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for jobs in counts:
            results[jobs] = measure(jobs, args, Path(scratch))
            r = results[jobs]
            print(f"  --jobs {jobs}: {r['completed']} completed in {r['wall']:.0f} s", flush=True)

    base = results[counts[0]]["per_hour"]
    print(f"\n{'--jobs':>7} {'wall (s)':>9} {'completed':>10} {'trials/hour':>12} {'vs --jobs ' + str(counts[0]):>12}")
    for jobs in counts:
        r = results[jobs]
        print(f"{jobs:>7} {r['wall']:>9.0f} {r['completed']:>10} {r['per_hour']:>12.0f} {r['per_hour'] / base:>11.2f}x")


if __name__ == "__main__":
    main()
