"""Analytic cost accounting, in fvcore's conventions. This is the one place they are stated.

FLOPs are multiply-adds (one fused multiply-add = one FLOP), counted as
fvcore's `FlopCountAnalysis` counts an eval-mode model at batch size 1:
  - convolution: output elements x (input channels / groups) x kh x kw; biases are free;
  - linear: inputs x outputs; biases are free;
  - batch norm (eval): 2 per element, a scale and a shift;
  - layer norm (with its affine scale and shift): 5 per element, fvcore's own estimate;
  - adaptive average pooling: 1 per input element.
Everything else is free because fvcore ignores it (or skips it as an op it
has no rule for): activations (ReLU, GELU, sigmoid), max and average pooling
with a fixed kernel, adaptive max pooling, residual adds and their scale,
layer scale and highway gating (elementwise multiplies and adds), channel
splits, concatenation, dropout and zero-padding shortcuts.

Params are the exact `numel()` sum over the module's parameters (norm running
statistics are buffers, not parameters). Activations are the output elements
of convolutions and linears (the pycls convention).
"""
from __future__ import annotations

import math

NORM_FLOPS = {"batch": 2, "layer": 5, "none": 0}  # FLOPs per normalised element, by norm type


class Cost:
    """A running total that each block's complexity() adds into, as in pycls."""
    __slots__ = ("flops", "params", "acts")

    def __init__(self, flops: int = 0, params: int = 0, acts: int = 0):
        self.flops, self.params, self.acts = flops, params, acts

    def conv(self, c_in: int, c_out: int, kh: int, kw: int, groups: int, bias: bool, h_out: int, w_out: int) -> None:
        weights = c_out * (c_in // groups) * kh * kw
        self.flops += weights * h_out * w_out
        self.params += weights + (c_out if bias else 0)
        self.acts += c_out * h_out * w_out

    def normed_conv(self, c_in: int, c_out: int, kh: int, kw: int, groups: int, bias: bool,
                    h_in: int, w_in: int, h_out: int, w_out: int, norm: int, per_element: int) -> None:
        """conv() plus a norm on its input (norm=-1) or output (norm=1); norm=0: none.
        One call instead of two on the search's hot path; the same rules as conv() and norm()."""
        weights = c_out * (c_in // groups) * kh * kw
        self.flops += weights * h_out * w_out + (0 if not norm else per_element * (c_out * h_out * w_out if norm > 0
                                                                                   else c_in * h_in * w_in))
        self.params += weights + (c_out if bias else 0) + (0 if not norm else 2 * (c_out if norm > 0 else c_in))
        self.acts += c_out * h_out * w_out

    def linear(self, n_in: int, n_out: int) -> None:
        self.flops += n_in * n_out
        self.params += n_in * n_out + n_out
        self.acts += n_out

    def norm(self, c: int, h: int, w: int, per_element: int) -> None:
        """A batch or layer norm over c channels of an h x w map (h = w = 1 for a vector):
        `per_element` FLOPs each (NORM_FLOPS), and a scale and a shift per channel."""
        self.flops += per_element * c * h * w
        self.params += 2 * c

    def as_tuple(self) -> tuple[int, int, int]:
        return self.flops, self.params, self.acts


def conv_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def pool_size(size: int, kernel: int, stride: int, padding: int, ceil: bool) -> int:
    """PyTorch's pooling output size, including its ceil-mode rule."""
    if not ceil:
        return conv_size(size, kernel, stride, padding)
    out = math.ceil((size + 2 * padding - kernel) / stride) + 1
    if (out - 1) * stride >= size + padding:  # the last window must start inside the input
        out -= 1
    return out
