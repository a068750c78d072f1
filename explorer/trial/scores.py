"""Zero-cost scores: rank untrained networks from one minibatch (or none).

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
Pre-screening search draws by a score is explorer.sweep.prescreen.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

import space
from space.ops import ACTIVATIONS

from ..base.settings import SCORE_BATCH, SCORES
from .trainer import normalisation, normalise, split_output

_RECTIFIERS = tuple(ACTIVATIONS.values())
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


# --------------------------------------------------------------------------- data

def minibatch(data, batch_size: int = SCORE_BATCH, seed: int = 0, device: torch.device | str = "cpu"):
    """A seeded random minibatch of the training split, normalised as the trainer does it."""
    device = torch.device(device)
    n = len(data.train_y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:min(batch_size, n)]
    scale, shift = normalisation(data, device)
    x = normalise(data.train_x[order].to(device), scale, shift)
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
            if isinstance(child, BATCH_NORMS):
                setattr(module, child_name, nn.Identity())
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    logits, _ = split_output(net(ones))
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
        logits, _ = split_output(net(x))
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
    logits, _ = split_output(net(x))
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
    """Build the proxy with a seeded initialisation and score it on a seeded minibatch. The scores run
    under the same seed too: snip, grad_norm and naswot forward in training mode, so a network with
    dropout would otherwise draw its masks from whatever state the caller's generator is in."""
    device = torch.device(device)
    x, y = minibatch(data, batch_size, seed, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = space.build(proxy, data.num_classes, data.in_channels).to(device)
        return compute(model, x, y, names)


def clean(value):
    """A score for JSON: NaN and infinities become None."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def finite(value: float) -> float:
    """Rank key: NaN and -inf (e.g. a singular NASWOT kernel) rank last."""
    return value if isinstance(value, (int, float)) and not math.isnan(value) else -math.inf


