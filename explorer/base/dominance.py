"""Non-dominated sorting on (accuracy up, cost down): the one order that promotion, the shown front
and the fidelity benchmarks all rank trials by, so that "the front" means the same thing everywhere."""
from __future__ import annotations

import math
from typing import Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """`a` = (accuracy, cost) is at least as accurate and as cheap as `b`, and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def nondominated_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Each point's front: 0 for the non-dominated, 1 for those only the first front dominates, and so on
    (NSGA-II's sorting; quadratic per front, which is nothing beside training a network)."""
    ranks = [-1] * len(points)
    left, rank = set(range(len(points))), 0
    while left:
        layer = {i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)}
        for i in layer:
            ranks[i] = rank
        left -= layer
        rank += 1
    return ranks


def sorted_by_fronts(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices best first: by front, then more accurate, then cheaper, then the earlier index."""
    ranks = nondominated_ranks(points)
    return sorted(range(len(points)), key=lambda i: (ranks[i], -points[i][0], points[i][1], i))


def accuracy_noise(accuracy: float, val_images: int | None, seed_std: float | None = None) -> float:
    """One standard error of an accuracy: its seed spread where it has one, never less than the binomial
    error of its validation split (which alone is all a single seed tells)."""
    binomial = math.sqrt(max(accuracy * (1 - accuracy), 0.0) / val_images) if val_images else 0.0
    return max(seed_std or 0.0, binomial)


def tied(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(accuracy, noise) a and b can't be told apart: their mean ± noise intervals overlap."""
    return abs(a[0] - b[0]) <= a[1] + b[1]


def near_front(points: Sequence[tuple[float, float]], noises: Sequence[float]) -> list[bool]:
    """Each point is non-dominated, or tied (within noise) with every point that dominates it."""
    return [all(tied((points[j][0], noises[j]), (p[0], noises[i])) for j in range(len(points))
                if dominates(points[j], p)) for i, p in enumerate(points)]
