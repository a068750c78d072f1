"""Zero-cost scores: rank untrained networks from one minibatch (or none), and pre-screen search draws.

Every score is computed at initialisation, without a single training step, each as
its paper defines it; every one is "higher is better":

synflow    Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
           conserving synaptic flow". All parameters are replaced by their absolute
           values, an all-ones input (batch of one) is fed forward in double precision,
           R = sum of the outputs, and the score is sum |theta * dR/dtheta| over the
           weights of every conv and linear layer (the weights Tanaka et al. prune).
           Batch norm is removed first, as in the synflow measure of Abdelfattah et al.
           2021 ("Zero-cost proxies for lightweight NAS", `bn=False`): with BN the
           all-ones input makes every batch statistic degenerate. Dropout is off and
           auxiliary heads don't contribute. The data is never looked at.
naswot     Mellor et al. 2021, "Neural architecture search without training". For each
           image of a minibatch, the binary code c of which units of every rectifier are
           active (pre-activation > 0); K_H[i, j] = N_A - Hamming(c_i, c_j), where N_A is
           the number of rectified units; the score is log |det K_H|. As in the authors'
           code the network is in training mode (batch statistics) and only rectifiers on
           the path to the logits count (aux heads don't). Besides ReLU, the grammar's
           other activations (ReLU6, SiLU, GELU, hardswish) are coded by the same
           pre-activation sign.
snip       Lee et al. 2019, "SNIP: single-shot network pruning based on connection
           sensitivity": sum |theta * dL/dtheta| over conv and linear weights, L the
           cross-entropy on one labelled minibatch (training mode).
grad_norm  Abdelfattah et al. 2021: the sum over conv and linear layers of the L2 norm of
           the weight gradient of that same loss.
params     the number of parameters of the network (aux heads included).

Scores depend on the random initialisation; `score_proxy` seeds it, so a genotype
scores the same in `explore score`, in pre-screening and in `explore fidelity`.

Pre-screening (`explore search --prescreen K`): each trial's own draw is candidate 1;
K-1 more budget-feasible candidates are drawn at random (seeded from the study seed
and the trial number); the best by the chosen score is trained. When a random
candidate wins, the trial is stored PRUNED with a `replaced` user attr and the winner
is enqueued with its own parameters, so the next trial trains it and every trained
trial's Optuna params reproduce its genotype (the sampler learns from what was
trained, at the price of one extra, untrained trial record per replacement).
"""
from __future__ import annotations

import copy
import math
import random

import optuna
import torch
import torch.nn.functional as F
from torch import nn

import space
from space.ops import ACTIVATIONS

from .trainer import _normalisation, _normalise, _split_output

SCORES = ("synflow", "naswot", "snip", "grad_norm", "params")
SCORE_BATCH = 64        # images per score minibatch, as in `explore score`
MAX_TRIES_PER_CANDIDATE = 200
PRESCREEN_KEY = "prescreen"
_RECTIFIERS = tuple(ACTIVATIONS.values())


# --------------------------------------------------------------------------- data

def minibatch(data, batch_size: int = SCORE_BATCH, seed: int = 0, device: torch.device | str = "cpu"):
    """A seeded random minibatch of the training split, normalised as the trainer does it."""
    device = torch.device(device)
    n = len(data.train_y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(batch_size, n)]
    scale, shift = _normalisation(data, device)
    x = _normalise(data.train_x[order].to(device), scale, shift)
    return x, data.train_y[order].to(device)


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# --------------------------------------------------------------------------- scores

def synflow(model: nn.Module, input_shape: tuple[int, ...], per_layer: bool = False):
    """Tanaka et al.'s synaptic flow, data-free: sum |theta * dR/dtheta|, R = 1^T f_|theta|(1).

    `input_shape` is (C, H, W). With per_layer, the list of each conv/linear layer's sum instead
    (conserved across the layers of a bias-free network: Tanaka et al.'s theorem)."""
    net = copy.deepcopy(model)
    for name, module in list(net.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, child_name, nn.Identity())
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    logits, _ = _split_output(net(ones))
    logits.sum().backward()
    sums = [float((layer.weight.detach() * layer.weight.grad).abs().sum()) if layer.weight.grad is not None else 0.0
            for layer in _weighted_layers(net)]
    return sums if per_layer else float(sum(sums))


def naswot(model: nn.Module, x: torch.Tensor) -> float:
    """Mellor et al.'s log |det K_H| over the rectifiers' binary activation codes of a minibatch."""
    net = copy.deepcopy(model).train()
    rectifiers = [m for m in net.modules() if isinstance(m, _RECTIFIERS)]
    reached: set[int] = set()
    codes: dict[int, torch.Tensor] = {}

    def keep(module, inputs, output):
        codes[id(module)] = inputs[0]
        if output.requires_grad:  # mark the rectifiers whose output reaches the logits
            output.register_hook(lambda grad, key=id(module): reached.add(key))

    handles = [m.register_forward_hook(keep) for m in rectifiers]
    try:
        logits, _ = _split_output(net(x))
        logits.backward(torch.ones_like(logits))
    finally:
        for h in handles:
            h.remove()
    n = x.shape[0]
    k = torch.zeros((n, n), dtype=torch.float64)
    for key, pre in codes.items():
        if key not in reached:
            continue
        c = (pre.detach().reshape(n, -1) > 0).float()
        # c c^T + (1-c)(1-c)^T = N_A - Hamming(c_i, c_j); one matmul, exact in float32 (0/1 products
        # and counts far below 2^24), accumulated over the rectifiers in float64.
        both = (c @ c.T).double().cpu()
        ones = c.sum(1).double().cpu()
        k += 2 * both + c.shape[1] - ones[:, None] - ones[None, :]
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign != 0 else float("-inf")


def _loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    logits, _ = _split_output(net(x))
    F.cross_entropy(logits, y).backward()
    return net


def snip(model: nn.Module, x: torch.Tensor, y: torch.Tensor, _net: nn.Module | None = None) -> float:
    """Lee et al.'s connection sensitivity, summed: sum |theta * dL/dtheta| over conv and linear weights."""
    net = _net or _loss_gradients(model, x, y)
    return float(sum((m.weight.detach() * m.weight.grad).abs().sum() for m in _weighted_layers(net)
                     if m.weight.grad is not None))


def grad_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, _net: nn.Module | None = None) -> float:
    """The sum over conv and linear layers of the L2 norm of dL/dW."""
    net = _net or _loss_gradients(model, x, y)
    return float(sum(m.weight.grad.norm() for m in _weighted_layers(net) if m.weight.grad is not None))


def param_count(model: nn.Module) -> float:
    return float(sum(p.numel() for p in model.parameters()))


def compute(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names=SCORES) -> dict[str, float]:
    """The named scores of one untrained model; the model itself is left untouched."""
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise ValueError(f"unknown score {unknown[0]!r}; choose from {', '.join(SCORES)}")
    out: dict[str, float] = {}
    grads = _loss_gradients(model, x, y) if {"snip", "grad_norm"} & set(names) else None
    for name in names:
        if name == "synflow":
            out[name] = synflow(model, tuple(x.shape[1:]))
        elif name == "naswot":
            out[name] = naswot(model, x)
        elif name == "snip":
            out[name] = snip(model, x, y, grads)
        elif name == "grad_norm":
            out[name] = grad_norm(model, x, y, grads)
        else:
            out[name] = param_count(model)
    return out


def score_proxy(proxy: space.Genotype, data, names=SCORES, batch_size: int = SCORE_BATCH, seed: int = 0,
                device: torch.device | str = "cpu") -> dict[str, float]:
    """Build the proxy with a seeded initialisation and score it on a seeded minibatch."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = space.build(proxy, data.num_classes, data.in_channels).to(device)
    x, y = minibatch(data, batch_size, seed, device)
    return compute(model, x, y, names)


def clean(value):
    """A score for JSON: NaN and infinities become None."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def finite(value: float) -> float:
    """Rank key: NaN and -inf (e.g. a singular NASWOT kernel) rank last."""
    return value if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


# --------------------------------------------------------------------------- pre-screening

class Replaced(optuna.TrialPruned):
    """Pre-screening found a better candidate than the sampler's draw; the winner is enqueued."""


def _feasible(g, settings, data):
    """(complexity, proxy) of a genotype that search would train, or None."""
    from .proxy import make_proxy
    from .search import DEPLOY_CLASSES
    try:
        cx = space.complexity(g, settings.resolution, DEPLOY_CLASSES, breakdown=False)
        if cx.flops > settings.budget or (settings.max_params and cx.params > settings.max_params):
            return None
        proxy = make_proxy(g, settings.proxy_resolution, settings.proxy_width, settings.proxy_depth,
                           data.in_channels, data.num_classes)
        space.complexity(proxy, breakdown=False, in_channels=data.in_channels)
        return cx, proxy
    except space.GenotypeError:
        return None


def draw_candidates(settings, data, trial_number: int, count: int) -> list[tuple]:
    """Up to `count` budget-feasible random draws (genotype, params, complexity, proxy), seeded from
    (seed, trial number)."""
    from space.sampling import RandomSource, sample
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
        fit = _feasible(g, settings, data)
        if fit is not None:
            out.append((g, dict(src.params), *fit))
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
    if s.prescreen <= 1 or "reference" in attrs or PRESCREEN_KEY in attrs:
        return  # off, a classic reference point, or an enqueued winner that carries its record
    own = _feasible(g, s, ctx.data)
    if own is None:
        return  # the objective rejects it with its reason
    candidates = [(g, dict(trial.params), *own)] + draw_candidates(s, ctx.data, trial.number, s.prescreen - 1)
    scores = [_safe_score(proxy, s.prescreen_score, ctx.data, s.seed, ctx.device) for _, _, _, proxy in candidates]
    best = max(range(len(candidates)), key=lambda i: (finite(scores[i]), -i))  # the own draw wins ties
    record = {"score": s.prescreen_score, "k": s.prescreen, "chosen": best, "of_trial": trial.number,
              "candidates": [{"digest": space.digest(c[0]), "family": c[0].family or "custom", "flops": c[2].flops,
                              "params": c[2].params, "score": clean(v), "own_draw": i == 0}
                             for i, (c, v) in enumerate(zip(candidates, scores))]}
    trial.set_user_attr(PRESCREEN_KEY, record)
    if best == 0:
        return
    trial.study.enqueue_trial(candidates[best][1], user_attrs={PRESCREEN_KEY: record})
    reason = (f"replaced by pre-screening: random candidate {best + 1} of {len(candidates)} scored higher "
              f"by {s.prescreen_score} ({scores[best]:.4g} > {scores[0]:.4g}); enqueued to train next")
    trial.set_user_attr("replaced", reason)
    raise Replaced(reason)
