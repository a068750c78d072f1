"""AlexNet and VGG (Krizhevsky et al. 2012; Simonyan & Zisserman 2014), torchvision layouts.

Plain convs with a bias and a ReLU ("ca": no norm), max pools between groups, and
a 4096-4096 FC head behind an adaptive average pool (torchvision's avgpool).
"""
from . import conv, pool, register


def _head(size: int) -> dict:
    return dict(pool="avg", size=size, hidden=[4096, 4096], dropout=0.5)


@register
def alexnet():
    maxpool = pool(3, 2, padding=0)
    return dict(name="alexnet", family="vanilla", resolution=224,
                stem=[conv(64, 11, 4, padding=2, order="ca"), maxpool],
                stages=[dict(name="conv2", blocks=[dict(branches=[[conv(192, 5, order="ca"), maxpool]])]),
                        dict(name="conv3", blocks=[dict(branches=[[conv(384, 3, order="ca"), conv(256, 3, order="ca"),
                                                                   conv(256, 3, order="ca"), maxpool]])])],
                head=_head(6))


def _vgg(name: str, depths: list[int]) -> dict:
    """Five groups of 3x3 convs (64, 128, 256, 512, 512 channels), each closed by a 2x2 max pool."""
    stages = [dict(name=f"conv{i + 1}", blocks=[dict(repeat=depth, branches=[[conv(min(64 * 2 ** i, 512), 3, order="ca")]]),
                                                dict(branches=[[pool(2, 2)]])])
              for i, depth in enumerate(depths)]
    return dict(name=name, family="vanilla", resolution=224, stages=stages, head=_head(7))


@register
def vgg16():
    return _vgg("vgg16", [2, 2, 3, 3, 3])


@register
def vgg19():
    return _vgg("vgg19", [2, 2, 4, 4, 4])
