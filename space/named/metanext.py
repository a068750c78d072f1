"""MetaNeXt nets (Yu et al. 2023): InceptionNeXt and ConvNeXt.

A MetaNeXt block is token mixer -> norm -> 1x1 MLP (ratio 4, GELU) -> layer
scale -> residual add. InceptionNeXt's mixer splits the channels into four
groups: an identity group and three depthwise convs (3x3, 1x11, 11x1) that take
1/8 each (`split`); ConvNeXt's is one 7x7 depthwise conv on every channel.
Both start with a 4x4/4 patchify conv and downsample with norm + 2x2/2 conv.
InceptionNeXt uses batch norm and an MLP head whose hidden layer is normalised
by a LayerNorm; ConvNeXt uses channels-first LayerNorm throughout and a head
of global pool, LayerNorm and classifier.

Layouts follow timm to the parameter:
  inception_next_tiny   timm `inception_next_tiny`    28,055,680 params
  inception_next_small  timm `inception_next_small`   49,374,016
  inception_next_base   timm `inception_next_base`    86,672,136
  convnext_tiny         timm `convnext_tiny`          28,589,128
Epsilons: timm's InceptionNeXt head LayerNorm uses 1e-6 where its batch norms
use 1e-5; here one `norm_eps` (1e-5) serves both (it changes neither params nor FLOPs).
"""
from . import conv, register

LAYER_SCALE = 1e-6  # timm's ls_init_value for both families


def depthwise(kernel) -> dict:
    """A depthwise conv with a bias and no norm or activation."""
    return dict(op="conv", out=1.0, kernel=kernel, groups="depthwise", order="c")


def inception_mixer(band: int = 11, square: int = 3, ratio: float = 0.125) -> dict:
    """InceptionDWConv2d: identity | square dw conv | 1 x band dw conv | band x 1 dw conv on channel slices."""
    return dict(op="branches", split=[1 - 3 * ratio, ratio, ratio, ratio],
                branches=[[dict(op="identity")], [depthwise(square)], [depthwise([1, band])],
                          [depthwise([band, 1])]])


def metanext_block(mixer: dict, dim: int, depth: int, mlp_ratio: float) -> dict:
    return dict(repeat=depth, skip="residual", layer_scale=LAYER_SCALE,
                branches=[[mixer, dict(op="norm"), conv(float(mlp_ratio), order="ca"), conv(dim, order="c")]])


def patchify(out: int, size: int, order: str) -> dict:
    """A size x size conv with stride size and a bias: the stem (order 'cn') and the downsampling ('nc')."""
    return conv(out, size, size, padding=0, order=order, bias=True)


def metanext(name: str, mixer: dict, depths, dims, mlp_ratios, norm: str, head: dict) -> dict:
    stages = []
    for i, (depth, dim, ratio) in enumerate(zip(depths, dims, mlp_ratios)):
        blocks = [] if i == 0 else [dict(branches=[[patchify(dim, 2, "nc")]])]
        blocks.append(metanext_block(mixer, dim, depth, ratio))
        stages.append(dict(name=f"stage{i}", blocks=blocks))
    return dict(name=name, family="metanext", norm=norm, norm_eps=1e-5 if norm == "batch" else 1e-6, act="gelu",
                stem=[patchify(dims[0], 4, "cn")], stages=stages, head=head)


def inception_next(name: str, depths, dims) -> dict:
    """timm's MetaNeXt with InceptionDWConv2d mixers, MLP ratios 4-4-4-3 and an MlpClassifierHead
    (hidden 3 x the last width, GELU, LayerNorm)."""
    return metanext(name, inception_mixer(), depths, dims, (4, 4, 4, 3), "batch",
                    dict(hidden=[3 * dims[-1]], norm="layer"))


@register
def inception_next_tiny() -> dict:
    return inception_next("inception_next_tiny", (3, 3, 9, 3), (96, 192, 384, 768))


@register
def inception_next_small() -> dict:
    return inception_next("inception_next_small", (3, 3, 27, 3), (96, 192, 384, 768))


@register
def inception_next_base() -> dict:
    return inception_next("inception_next_base", (3, 3, 27, 3), (128, 256, 512, 1024))


@register
def convnext_tiny() -> dict:
    """ConvNeXt-T (Liu et al. 2022), timm layout: 7x7 depthwise mixer, LayerNorm everywhere, and a head
    of global average pool, LayerNorm and classifier."""
    head = dict(ops=[dict(op="adaptive_pool"), dict(op="norm")], pool="none")
    return metanext("convnext_tiny", depthwise(7), (3, 3, 9, 3), (96, 192, 384, 768), (4, 4, 4, 4), "layer", head)
