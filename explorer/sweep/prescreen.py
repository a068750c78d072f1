"""Pre-screening (`explore search --prescreen K`): each trial's own draw is candidate 1;
K-1 more budget-feasible candidates are drawn at random (seeded from the study seed
and the trial number); the best by the chosen score is trained. When a random
candidate wins, the trial is stored PRUNED with a `replaced` user attr and the winner
is enqueued with its own parameters, so the next trial trains it and every trained
trial's Optuna params reproduce its genotype (the sampler learns from what was
trained, at the price of one extra, untrained trial record per replacement).
"""
from __future__ import annotations

import random
from typing import NamedTuple

import optuna

import space
from space.sampling import RandomSource, sample

from ..studies.record import REFERENCE, REPLACED
from ..trial.candidate import over_limits, price, proxy_of
from ..trial.scores import clean, finite, score_proxy

MAX_TRIES_PER_CANDIDATE = 200
PRESCREEN_KEY = "prescreen"


class Replaced(optuna.TrialPruned):
    """Pre-screening found a better candidate than the sampler's draw; the winner is enqueued."""


class Candidate(NamedTuple):
    """A budget-feasible draw: what it is, the parameters that give it, its deployed cost and its proxy."""
    genotype: space.Genotype
    params: dict
    cost: space.Complexity
    proxy: space.Genotype


def _feasible(g, params: dict, settings, data) -> Candidate | None:
    """The candidate a genotype is, if search would train it; else None."""
    try:
        cx = price(g, settings.resolution)
        return None if over_limits(g, cx, settings) else Candidate(g, params, cx, proxy_of(g, settings, data)[0])
    except space.GenotypeError:
        return None


def draw_candidates(settings, data, trial_number: int, count: int) -> list[Candidate]:
    """Up to `count` budget-feasible random draws, seeded from (seed, trial number)."""
    rng = random.Random(settings.seed * 1_000_003 + trial_number)
    out = []
    for _ in range(count * MAX_TRIES_PER_CANDIDATE):
        if len(out) == count:
            break
        src = RandomSource(rng)
        try:
            g = sample(settings.space_doc, src, settings.short_names)
        except space.GenotypeError:
            continue
        fit = _feasible(g, dict(src.params), settings, data)
        if fit is not None:
            out.append(fit)
    return out


def _safe_score(proxy, name: str, data, seed: int, device) -> float:
    """A candidate whose score can't be computed (e.g. out of memory) ranks last instead of failing the trial."""
    try:
        return score_proxy(proxy, data, (name,), seed=seed, device=device)[name]
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception:  # noqa: BLE001
        return float("nan")


def screen(trial: optuna.Trial, g, cx, ctx) -> None:
    """Pre-screen a trial's draw (see the module doc). Returns when the trial should train its own draw;
    raises Replaced after enqueueing the winner otherwise."""
    s = ctx.settings
    attrs = trial.user_attrs
    if s.prescreen <= 1 or REFERENCE in attrs or PRESCREEN_KEY in attrs:
        return  # off, a classic reference point, or an enqueued winner that carries its record
    own = _feasible(g, dict(trial.params), s, ctx.data)
    if own is None:
        return  # the objective rejects it with its reason
    candidates = [own] + draw_candidates(s, ctx.data, trial.number, s.prescreen - 1)
    scores = [_safe_score(c.proxy, s.prescreen_score, ctx.data, s.seed, ctx.device) for c in candidates]
    best = max(range(len(candidates)), key=lambda i: (finite(scores[i]), -i))  # the own draw wins ties
    record = {"score": s.prescreen_score, "k": s.prescreen, "chosen": best, "of_trial": trial.number,
              "candidates": [{"digest": space.digest(c.genotype), "family": c.genotype.family or "custom",
                              "flops": c.cost.flops, "params": c.cost.params, "score": clean(v), "own_draw": i == 0}
                             for i, (c, v) in enumerate(zip(candidates, scores))]}
    trial.set_user_attr(PRESCREEN_KEY, record)
    if best == 0:
        return
    trial.study.enqueue_trial(candidates[best].params, user_attrs={PRESCREEN_KEY: record})
    reason = (f"replaced by pre-screening: random candidate {best + 1} of {len(candidates)} scored higher "
              f"by {s.prescreen_score} ({scores[best]:.4g} > {scores[0]:.4g}); enqueued to train next")
    trial.set_user_attr(REPLACED, reason)
    raise Replaced(reason)
