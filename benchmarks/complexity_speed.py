"""Analytic complexity against fvcore tracing, on the same union-space genotypes, in one run.

    python benchmarks/complexity_speed.py [--samples 2000] [--traced 30] [--resolution 224] [--repeats 5]

Prints genotypes per second for each way of pricing a candidate and the ratios.
One CPU thread throughout (torch.set_num_threads(1)), so the figures are per core.
FLOPs are multiply-adds; the script also checks both agree on every traced genotype.
"""
from __future__ import annotations

import argparse
import platform
import time
import warnings

import torch

import space
from space.sampling import load_space, sample


def draw(n: int, resolution: int) -> list:
    union, out, seed = load_space("union"), [], 0
    while len(out) < n:
        try:
            g = sample(union, seed)
            space.complexity(g, resolution, breakdown=False)
            out.append(g)
        except space.GenotypeError:
            pass
        seed += 1
    return out


def rate(fn, items, repeats: int = 1) -> float:
    """Items per second of the fastest of `repeats` passes (timeit's rule: slower passes measure other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--traced", type=int, default=30)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5, help="passes over the analytic samples; the fastest counts")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from fvcore.nn import FlopCountAnalysis

    genotypes = draw(args.samples, args.resolution)
    docs = [space.dump(g) for g in genotypes]
    r = args.resolution

    analytic = rate(lambda g: space.complexity(g, r, breakdown=False), genotypes, args.repeats)
    analytic_doc = rate(lambda d: space.complexity(space.load(d), r, breakdown=False), docs, args.repeats)

    traced = genotypes[: args.traced]
    models = []
    build_start = time.perf_counter()
    for g in traced:
        with torch.device("meta"):
            m = space.build(g, resolution=r)
        models.append(m.to_empty(device="cpu").eval())
    build_rate = len(traced) / (time.perf_counter() - build_start)

    def trace(pair):
        g, m = pair
        fca = FlopCountAnalysis(m, torch.zeros(1, 3, r, r))
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        flops = fca.total()
        assert flops == space.complexity(g, r, breakdown=False).flops, space.to_yaml(g)

    with torch.inference_mode():
        fvcore_rate = rate(trace, list(zip(traced, models)))
    fvcore_with_build = 1 / (1 / fvcore_rate + 1 / build_rate)

    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()}, torch {torch.__version__}, "
          f"1 thread; union space at {r}x{r}, 1000 classes; FLOPs are multiply-adds")
    print(f"analytic, validated genotypes     {analytic:10.0f} genotypes/s   ({len(genotypes)} genotypes)")
    print(f"analytic, from a document         {analytic_doc:10.0f} genotypes/s   (validation included)")
    print(f"fvcore trace of a built model     {fvcore_rate:10.2f} genotypes/s   ({len(traced)} genotypes, all agree)")
    print(f"fvcore, build (no init) + trace   {fvcore_with_build:10.2f} genotypes/s")
    print(f"ratio analytic / fvcore trace     {analytic / fvcore_rate:10.0f}x")
    print(f"ratio analytic / fvcore + build   {analytic / fvcore_with_build:10.0f}x")
    print(f"ratio from-document / fvcore      {analytic_doc / fvcore_rate:10.0f}x")


if __name__ == "__main__":
    main()
