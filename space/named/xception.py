"""Xception (Chollet 2017), as Keras builds it (timm's legacy_xception).

Separable convs are depthwise then pointwise with nothing between (`mid: ""`),
preceded by ReLU and followed by BN ("acn") inside the residual blocks.
"""
from . import conv, pool, register


def sep(out: int, order: str = "acn") -> dict:
    return dict(op="sep", out=out, order=order)


def _down(mid: int, out: int, order: str = "acn") -> dict:
    """Two ReLU-sep-BN and a 3x3/2 max pool; the shortcut is a strided 1x1 conv-BN."""
    return dict(skip="residual", shortcut="conv-norm", branches=[[sep(mid, order), sep(out), pool(3, 2, padding=1)]])


@register
def xception():
    return dict(name="xception", family="separable", resolution=299,
                stem=[conv(32, 3, 2, padding=0), conv(64, 3, padding=0)],
                stages=[dict(name="entry", blocks=[_down(128, 128, order="cn"),  # the stem just ended in a ReLU
                                                   _down(256, 256), _down(728, 728)]),
                        dict(name="middle", blocks=[dict(repeat=8, skip="residual", branches=[[sep(728)] * 3])]),
                        dict(name="exit", blocks=[_down(728, 1024),
                                                  dict(branches=[[sep(1536, "cna"), sep(2048, "cna")]])])])
