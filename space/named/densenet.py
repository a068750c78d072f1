"""DenseNet (Huang et al. 2017): torchvision's ImageNet nets and the CIFAR DenseNet-BC.

A dense layer is a block that concatenates its output onto its input (`skip: dense`);
`repeat` stacks a whole dense block. Transitions halve the channels and the map.
"""
from . import conv, pool, register


def _dense(repeat: int, growth: int) -> dict:
    """BN-ReLU-conv 1x1 (bn_size 4 x growth), BN-ReLU-conv 3x3 (growth), concatenated onto the input."""
    return dict(repeat=repeat, skip="dense", branches=[[conv(4 * growth, order="nac"), conv(growth, 3, order="nac")]])


# BN-ReLU-conv 1x1 to half the input channels (compression 0.5), then 2x2 average pool.
_TRANSITION = dict(branches=[[conv(0.5, order="nac"), pool(2, 2, type="avg", padding=0)]])


def _densenet(name: str, depths: list[int], growth: int, stem: list[dict], resolution: int) -> dict:
    stages = [dict(name=f"dense{i + 1}", blocks=[_dense(depth, growth)] + ([_TRANSITION] if i < len(depths) - 1 else []))
              for i, depth in enumerate(depths)]
    return dict(name=name, family="dense", resolution=resolution, classes=1000 if resolution == 224 else 10,
                stem=stem, stages=stages,
                head=dict(ops=[dict(op="norm"), dict(op="act")]))  # norm5 + ReLU before the pool


def _imagenet(name: str, depths: list[int]) -> dict:
    return _densenet(name, depths, 32, [conv(64, 7, 2), pool(3, 2, padding=1)], 224)


@register
def densenet121():
    return _imagenet("densenet121", [6, 12, 24, 16])


@register
def densenet169():
    return _imagenet("densenet169", [6, 12, 32, 32])


@register
def densenet_bc_100_k12():
    """CIFAR DenseNet-BC, depth 100, growth 12: a bare 3x3 conv to 2k channels, then 3 x 16 dense layers."""
    return _densenet("densenet_bc_100_k12", [16, 16, 16], 12, [conv(24, 3, order="c", bias=False)], 32)
