"""MobileNet v1 (Howard et al. 2017), as Keras and timm build it.

Each layer is a separable conv with BN-ReLU after both the depthwise and the
pointwise conv (`mid: "na"`, order "cna"). Channels are the width-1.0 counts;
the genotype's `width` multiplier scales them.
"""
from . import conv, register

# (channels, stride of the first layer, layers) per stage: 13 separable layers in all
_STAGES = [(64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 2, 6), (1024, 2, 2)]


def _mobilenet(name: str, width: float = 1.0) -> dict:
    stages = [dict(name=f"stage{i + 1}", blocks=[dict(repeat=n, branches=[[dict(op="sep", out=c, stride=s, mid="na")]])])
              for i, (c, s, n) in enumerate(_STAGES)]
    return dict(name=name, family="mobilenet", resolution=224, width=width, stem=[conv(32, 3, 2)], stages=stages)


@register
def mobilenet():
    return _mobilenet("mobilenet")
