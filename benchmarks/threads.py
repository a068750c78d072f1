"""Proxy training speed against CPU threads, OpenMP's wait policy, and a competing busy process.

    python benchmarks/threads.py [--seconds 8] [--genotype resnet50]

Each configuration runs in a fresh process (OpenMP reads its settings when torch loads): a proxy
(width x0.25, repeats <= 2, 16 px, 10 classes) trains on random images, batch 64, SGD, for a fixed
wall time after a warm-up, and its images per second are printed. Configurations:

- threads 1 or 2 (torch.set_num_threads),
- OpenMP wait policy: libgomp's default (threads spin at each barrier before sleeping) or PASSIVE
  (they sleep at once); and `auto`: the threads `explorer.trial.trainer.set_cpu_threads` chooses by itself
  (the cores other processes leave idle), with the default policy,
- without, or beside, one single-threaded busy loop (`python3 -c "while True: pass"`), as a user's
  browser or notebook would be.

The ratios printed are to 2 threads with the default policy (the old behaviour) without the busy
loop, measured side by side in this one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import os, sys, time
threads, seconds, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
import torch
import space
from explorer.trial.proxy import make_proxy
from explorer.trial.trainer import set_cpu_threads
if threads == "auto":
    set_cpu_threads()
else:
    torch.set_num_threads(int(threads))
torch.manual_seed(0)
model = space.build(make_proxy(space.named(name), 16, 0.25, 2, 3, 10), 10, 3)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,))
def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
for _ in range(3):
    step()
steps, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    step()
    steps += 1
print(steps * 64 / (time.perf_counter() - start), torch.get_num_threads())
"""


def measure(threads: str, policy: str, seconds: float, genotype: str) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    if policy == "passive":  # set before torch loads; "default": libgomp's own; "ours": set_cpu_threads decides
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    run = subprocess.run([sys.executable, "-c", CHILD, threads, str(seconds), genotype], env=env, check=True,
                         capture_output=True, text=True, timeout=seconds * 20 + 120)
    rate, used = run.stdout.split()
    return float(rate), int(used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured wall time per configuration")
    parser.add_argument("--genotype", default="resnet50")
    args = parser.parse_args()
    configs = [("1", "default"), ("2", "default"), ("1", "passive"), ("2", "passive"), ("auto", "ours")]
    load = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
          f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.genotype} proxy, "
          f"{args.seconds:g} s per configuration")
    results = {}
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            if hog:
                time.sleep(2)  # let it be seen in the load average's first moments
            for threads, policy in configs:
                results[busy, threads, policy] = measure(threads, policy, args.seconds, args.genotype)
        finally:
            if hog:
                hog.kill()
                hog.wait()
    base = results[False, "2", "default"][0]
    print(f"{'threads':>8} {'policy':>8} {'without img/s':>14} {'ratio':>6} {'busy-loop img/s':>16} {'ratio':>6} "
          f"{'slowdown':>9}")
    for threads, policy in configs:
        (quiet, tq), (busy, tb) = results[False, threads, policy], results[True, threads, policy]
        label = threads if threads != "auto" else f"auto({tq}/{tb})"
        print(f"{label:>8} {policy:>8} {quiet:14.0f} {quiet / base:6.2f} {busy:16.0f} {busy / base:6.2f} "
              f"{quiet / busy if busy else float('inf'):8.1f}x")
    print("ratios are to 2 threads with the default policy (the old behaviour) without the busy loop; "
          "slowdown: without / beside the busy loop, same configuration")


if __name__ == "__main__":
    main()
