"""ResNet and ResNeXt (He et al. 2015; Xie et al. 2017), torchvision layouts."""
from . import conv, pool, register


def _bottleneck(width: int, out: int, repeat: int, stride: int, groups: int = 1) -> dict:
    """1x1 reduce, 3x3 (strided, as in torchvision's v1.5), 1x1 expand; add, then ReLU."""
    return dict(repeat=repeat, skip="residual", act=True,
                branches=[[conv(width), conv(width, 3, stride, groups=groups), conv(out, order="cn")]])


def _imagenet_resnet(name: str, depths: list[int], groups: int = 1, group_width: int = 64) -> dict:
    stages = []
    for i, depth in enumerate(depths):
        planes = 64 * 2 ** i
        width = planes * group_width // 64 * groups
        stages.append(dict(name=f"layer{i + 1}", blocks=[_bottleneck(width, planes * 4, depth, 1 if i == 0 else 2, groups)]))
    return dict(name=name, family="resnext" if groups > 1 else "residual", resolution=224,
                stem=[conv(64, 7, 2), pool(3, 2, padding=1)], stages=stages)


@register
def resnet50():
    return _imagenet_resnet("resnet50", [3, 4, 6, 3])


@register
def resnet101():
    return _imagenet_resnet("resnet101", [3, 4, 23, 3])


@register
def resnet152():
    return _imagenet_resnet("resnet152", [3, 8, 36, 3])


@register
def resnext50_32x4d():
    return _imagenet_resnet("resnext50_32x4d", [3, 4, 6, 3], groups=32, group_width=4)


# --------------------------------------------------------------------------- CIFAR (32x32, 10 classes)

def _basic(width: int, repeat: int, stride: int) -> dict:
    """3x3 conv-BN-ReLU, 3x3 conv-BN; add the identity, zero-padded where it grows (option A); ReLU."""
    return dict(repeat=repeat, skip="residual", shortcut="pad", act=True,
                branches=[[conv(width, 3, stride), conv(width, 3, order="cn")]])


def _preact_bottleneck(width: int, repeat: int, stride: int) -> dict:
    """BN-ReLU-conv 1x1, 3x3 (strided), 1x1 to 4x width; add the identity or a bare 1x1 conv projection."""
    return dict(repeat=repeat, skip="residual", shortcut="conv",
                branches=[[conv(width, order="nac"), conv(width, 3, stride, order="nac"), conv(4 * width, order="nac")]])


def _cifar(name: str, family: str, stem: list[dict], blocks: list[dict], **fields) -> dict:
    """One stage per block spec, at 32x32, 16x16 and 8x8."""
    return dict(name=name, family=family, resolution=32, classes=10, stem=stem,
                stages=[dict(name=f"layer{i + 1}", blocks=[block]) for i, block in enumerate(blocks)], **fields)


@register
def resnet110():
    return _cifar("resnet110", "residual", [conv(16, 3)], [_basic(16 * 2 ** i, 18, 2 if i else 1) for i in range(3)])


@register
def preact_resnet164():
    return _cifar("preact_resnet164", "residual", [conv(16, 3, order="c", bias=False)],
                  [_preact_bottleneck(16 * 2 ** i, 18, 2 if i else 1) for i in range(3)],
                  head=dict(ops=[dict(op="norm"), dict(op="act")]))  # the last block's output is not yet activated


@register
def resnext29_8x64d():
    """Cardinality 8, 64 channels per group in the first stage: grouped 3x3 widths 512/1024/2048."""
    return _cifar("resnext29_8x64d", "resnext", [conv(64, 3)],
                  [_bottleneck(512 * 2 ** i, 256 * 2 ** i, 3, 2 if i else 1, groups=8) for i in range(3)])
