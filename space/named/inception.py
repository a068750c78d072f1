"""The Inception family: GoogLeNet (v1), BN-Inception, Inception v3 and v4, Inception-ResNet v1 and v2.

Every Inception module is one block whose branches are its parallel paths,
merged by concat; reduction modules are blocks with strided (valid) conv
branches beside a max-pool branch. Inception-ResNet blocks add a linear 1x1
up-projection (a bias, no norm or activation: `order: "c"`) as the block's
`post` op, then a scaled residual add and a ReLU.

Layouts follow the reference implementations to the parameter:
  googlenet            torchvision `googlenet(aux_logits=False)`     6,624,904 params
  googlenet_aux        torchvision `googlenet(aux_logits=True)`     13,004,888
  bn_inception         the Caffe port of Ioffe & Szegedy 2015        11,295,240
                       (Cadene's pretrainedmodels `bninception`)
  inception_v3         torchvision `inception_v3(aux_logits=False)` 23,834,568
  inception_v3_aux     torchvision `inception_v3(aux_logits=True)`  27,161,264
  inception_v4         timm `inception_v4`                          42,679,816
  inception_resnet_v2  timm `inception_resnet_v2`                   55,843,464
  inception_resnet_v1  Szegedy et al. 2016, Figures 14, 10-13      22,756,328 (no published count to check
                       against; see its constructor)
All but BN-Inception use batch norm with eps 0.001 and bias-free conv-BN-ReLU
convs; BN-Inception's convs keep their Caffe biases in front of the norm
(eps 1e-5) and its pools round up (ceil mode).
"""
from . import conv, pool, register

EPS = 1e-3  # every reference here builds BatchNorm2d(eps=0.001)


def valid(out, kernel, stride=1) -> dict:
    """An unpadded ("V" in the papers) conv."""
    return conv(out, kernel, stride, padding=0)


def maxpool(kernel=3, stride=2, **fields) -> dict:
    """A max pool; unpadded unless told (the papers' "3x3 MaxPool (stride 2 V)")."""
    return pool(kernel, stride, padding=fields.pop("padding", 0), **fields)


def avgpool(count_include_pad=True) -> dict:
    """The 3x3 stride-1 'same' average pool in front of a pooling branch's 1x1 conv."""
    return pool(3, 1, type="avg", count_include_pad=count_include_pad)


def block(*branches, **fields) -> dict:
    return dict(branches=list(branches), **fields)


def split(out) -> dict:
    """The 1x3 and 3x1 convs side by side, concatenated (Inception v3's module E, v4's C)."""
    return dict(op="branches", branches=[[conv(out, [1, 3])], [conv(out, [3, 1])]])


def genotype(name, family, stem, stages, dropout, resolution=299) -> dict:
    return dict(name=name, family=family, resolution=resolution, norm_eps=EPS, stem=stem,
                stages=[dict(name=n, blocks=b) for n, b in stages], head=dict(dropout=dropout))


# --------------------------------------------------------------------------- GoogLeNet (Inception v1)

def googlenet_module(c1, c3_reduce, c3, c5_reduce, c5, pool_proj, aux=None) -> dict:
    """Szegedy et al. 2014, Figure 2(b). As in torchvision, the "5x5" branch uses a 3x3 kernel
    (a long-standing quirk kept for its pretrained weights), and the pool branch's pool rounds up."""
    return block([conv(c1)],
                 [conv(c3_reduce), conv(c3, 3)],
                 [conv(c5_reduce), conv(c5, 3)],
                 [pool(3, 1, ceil=True), conv(pool_proj)],
                 aux=aux)


def googlenet_aux_head() -> dict:
    """torchvision's InceptionAux: 4x4 average pool, 1x1 conv 128, FC 1024 + ReLU, dropout 0.7, FC."""
    return dict(ops=[dict(op="adaptive_pool", output=4), conv(128)], pool="none", hidden=[1024], dropout=0.7)


@register
def googlenet(aux: bool = False) -> dict:
    """GoogLeNet (Szegedy et al. 2014), torchvision layout; `aux` adds the heads on 4a and 4d."""
    head = googlenet_aux_head() if aux else None
    down = maxpool(ceil=True)
    stem = [conv(64, 7, 2), down, conv(64), conv(192, 3), down]
    stages = [
        ("inception_3", [googlenet_module(64, 96, 128, 16, 32, 32),
                         googlenet_module(128, 128, 192, 32, 96, 64)]),
        ("inception_4", [block([down]),
                         googlenet_module(192, 96, 208, 16, 48, 64, aux=head),
                         googlenet_module(160, 112, 224, 24, 64, 64),
                         googlenet_module(128, 128, 256, 24, 64, 64),
                         googlenet_module(112, 144, 288, 32, 64, 64, aux=head),
                         googlenet_module(256, 160, 320, 32, 128, 128)]),
        ("inception_5", [block([maxpool(2, 2, ceil=True)]),
                         googlenet_module(256, 160, 320, 32, 128, 128),
                         googlenet_module(384, 192, 384, 48, 128, 128)]),
    ]
    return genotype("googlenet_aux" if aux else "googlenet", "inception", stem, stages, dropout=0.2, resolution=224)


@register
def googlenet_aux() -> dict:
    return googlenet(aux=True)


# --------------------------------------------------------------------------- BN-Inception

def biased(out, kernel=1, stride=1) -> dict:
    """BN-Inception's conv: conv with a bias, BN, ReLU."""
    return conv(out, kernel, stride, bias=True)


def bn_inception_module(c1, c3_reduce, c3, d3_reduce, d3, pool_proj, pool_type="avg") -> dict:
    """Ioffe & Szegedy 2015, Figure 5's modules: 1x1 | 1x1, 3x3 | 1x1, 3x3, 3x3 (the "5x5" as two 3x3s)
    | 3x3 pool (average, or max in 5b), 1x1."""
    return block([biased(c1)],
                 [biased(c3_reduce), biased(c3, 3)],
                 [biased(d3_reduce), biased(d3, 3), biased(d3, 3)],
                 [pool(3, 1, type=pool_type, ceil=True), biased(pool_proj)])


def bn_inception_reduction(c3_reduce, c3, d3_reduce, d3) -> dict:
    """3c and 4e: the 3x3 paths end with a stride-2 conv, beside a 3x3/2 max pool; the widths add up."""
    return block([biased(c3_reduce), biased(c3, 3, 2)],
                 [biased(d3_reduce), biased(d3, 3), biased(d3, 3, 2)],
                 [maxpool(ceil=True)])


@register
def bn_inception() -> dict:
    """BN-Inception (Ioffe & Szegedy 2015), the layout of its widely used Caffe port."""
    down = maxpool(ceil=True)
    stem = [biased(64, 7, 2), down, biased(64), biased(192, 3), down]
    stages = [
        ("inception_3", [bn_inception_module(64, 64, 64, 64, 96, 32),
                         bn_inception_module(64, 64, 96, 64, 96, 64),
                         bn_inception_reduction(128, 160, 64, 96)]),
        ("inception_4", [bn_inception_module(224, 64, 96, 96, 128, 128),
                         bn_inception_module(192, 96, 128, 96, 128, 128),
                         bn_inception_module(160, 128, 160, 128, 160, 128),
                         bn_inception_module(96, 128, 192, 160, 192, 128),
                         bn_inception_reduction(128, 192, 192, 256)]),
        ("inception_5", [bn_inception_module(352, 192, 320, 160, 224, 128),
                         bn_inception_module(352, 192, 320, 192, 224, 128, pool_type="max")]),
    ]
    return dict(name="bn_inception", family="inception", stem=stem,
                stages=[dict(name=n, blocks=b) for n, b in stages])


# --------------------------------------------------------------------------- Inception v3

def inception_v3_a(pool_features) -> dict:
    """35x35: 1x1 | 1x1, 5x5 | 1x1, 3x3, 3x3 | avg pool, 1x1."""
    return block([conv(64)],
                 [conv(48), conv(64, 5)],
                 [conv(64), conv(96, 3), conv(96, 3)],
                 [avgpool(), conv(pool_features)])


def inception_v3_b() -> dict:
    """35 -> 17 reduction (Mixed_6a)."""
    return block([valid(384, 3, 2)],
                 [conv(64), conv(96, 3), valid(96, 3, 2)],
                 [maxpool()])


def inception_v3_c(c7, aux=None) -> dict:
    """17x17, 7x7 factorised into 1x7 and 7x1; `c7` is the width inside the factorised paths."""
    return block([conv(192)],
                 [conv(c7), conv(c7, [1, 7]), conv(192, [7, 1])],
                 [conv(c7), conv(c7, [7, 1]), conv(c7, [1, 7]), conv(c7, [7, 1]), conv(192, [1, 7])],
                 [avgpool(), conv(192)],
                 aux=aux)


def inception_v3_d() -> dict:
    """17 -> 8 reduction (Mixed_7a)."""
    return block([conv(192), valid(320, 3, 2)],
                 [conv(192), conv(192, [1, 7]), conv(192, [7, 1]), valid(192, 3, 2)],
                 [maxpool()])


def inception_v3_e() -> dict:
    """8x8, with the 3x3s' outputs split into 1x3 and 3x1 side by side."""
    return block([conv(320)],
                 [conv(384), split(384)],
                 [conv(448), conv(384, 3), split(384)],
                 [avgpool(), conv(192)])


def inception_v3_aux_head() -> dict:
    """torchvision's InceptionAux on the 17x17 map: 5x5/3 average pool, 1x1 conv 128,
    5x5 valid conv 768 (to 1x1), global average pool, FC."""
    return dict(ops=[pool(5, 3, type="avg", padding=0), conv(128), valid(768, 5)])


@register
def inception_v3(aux: bool = False) -> dict:
    """Inception v3 (Szegedy et al. 2015), torchvision layout; `aux` adds the head on Mixed_6e."""
    stem = [valid(32, 3, 2), valid(32, 3), conv(64, 3), maxpool(),
            conv(80), valid(192, 3), maxpool()]
    stages = [
        ("mixed_5", [inception_v3_a(32), inception_v3_a(64), inception_v3_a(64)]),
        ("mixed_6", [inception_v3_b(), inception_v3_c(128), inception_v3_c(160), inception_v3_c(160),
                     inception_v3_c(192, aux=inception_v3_aux_head() if aux else None)]),
        ("mixed_7", [inception_v3_d(), inception_v3_e(), inception_v3_e()]),
    ]
    return genotype("inception_v3_aux" if aux else "inception_v3", "inception", stem, stages, dropout=0.5)


@register
def inception_v3_aux() -> dict:
    return inception_v3(aux=True)


# --------------------------------------------------------------------------- Inception v4

def inception_v4_stem() -> tuple[list, list]:
    """Szegedy et al. 2016, Figure 3: three convs, then three two-way concats (Mixed_3a/4a/5a)."""
    stem = [valid(32, 3, 2), valid(32, 3), conv(64, 3)]
    mixed = [
        block([maxpool()], [valid(96, 3, 2)]),
        block([conv(64), valid(96, 3)],
              [conv(64), conv(64, [1, 7]), conv(64, [7, 1]), valid(96, 3)]),
        block([valid(192, 3, 2)], [maxpool()]),
    ]
    return stem, mixed


def inception_v4_a() -> dict:
    """35x35 (Figure 4); timm's average pools exclude the padding from the mean."""
    return block([conv(96)],
                 [conv(64), conv(96, 3)],
                 [conv(64), conv(96, 3), conv(96, 3)],
                 [avgpool(count_include_pad=False), conv(96)],
                 repeat=4)


def reduction_a(k, l, m, n) -> dict:  # noqa: E741  (the paper's names for the filter counts)
    """35 -> 17 (Figure 7), with the paper's Table 1 filter counts k, l, m, n."""
    return block([valid(n, 3, 2)],
                 [conv(k), conv(l, 3), valid(m, 3, 2)],
                 [maxpool()])


def inception_v4_b() -> dict:
    """17x17 (Figure 5)."""
    return block([conv(384)],
                 [conv(192), conv(224, [1, 7]), conv(256, [7, 1])],
                 [conv(192), conv(192, [7, 1]), conv(224, [1, 7]), conv(224, [7, 1]), conv(256, [1, 7])],
                 [avgpool(count_include_pad=False), conv(128)],
                 repeat=7)


def inception_v4_reduction_b() -> dict:
    """17 -> 8 (Figure 8)."""
    return block([conv(192), valid(192, 3, 2)],
                 [conv(256), conv(256, [1, 7]), conv(320, [7, 1]), valid(320, 3, 2)],
                 [maxpool()])


def inception_v4_c() -> dict:
    """8x8 (Figure 6)."""
    return block([conv(256)],
                 [conv(384), split(256)],
                 [conv(384), conv(448, [3, 1]), conv(512, [1, 3]), split(256)],
                 [avgpool(count_include_pad=False), conv(256)],
                 repeat=3)


@register
def inception_v4() -> dict:
    """Inception v4 (Szegedy et al. 2016), timm layout: 4 x A, reduction A, 7 x B, reduction B, 3 x C."""
    stem, mixed = inception_v4_stem()
    stages = [
        ("mixed_3", mixed),
        ("inception_a", [inception_v4_a()]),
        ("inception_b", [reduction_a(192, 224, 256, 384), inception_v4_b()]),
        ("inception_c", [inception_v4_reduction_b(), inception_v4_c()]),
    ]
    # timm's default drop_rate is 0; the paper trains with dropout keep-probability 0.8
    return genotype("inception_v4", "inception", stem, stages, dropout=0.2)


# --------------------------------------------------------------------------- Inception-ResNet

def residual(out, repeat, scale, *branches, act=True) -> dict:
    """Concat the branches, project back to `out` channels with a linear 1x1 conv (bias, no norm),
    scale, add the input, ReLU."""
    return block(*branches, post=[conv(out, order="c")], skip="residual", scale=scale, act=act,
                 repeat=repeat)


def inception_resnet_stem() -> list:
    """Shared by v1 (Figure 14, plus its last conv) and v2 (timm: conv2d_1a ... maxpool_5a)."""
    return [valid(32, 3, 2), valid(32, 3), conv(64, 3), maxpool(), conv(80), valid(192, 3)]


@register
def inception_resnet_v2() -> dict:
    """Inception-ResNet-v2 (Szegedy et al. 2016), timm layout (TF-slim's: 10 x Block35, 20 x Block17,
    9 + 1 x Block8, the last unscaled and without ReLU, then a 1x1 conv to 1536)."""
    stem = inception_resnet_stem() + [maxpool()]
    mixed_5b = block([conv(96)],
                     [conv(48), conv(64, 5)],
                     [conv(64), conv(96, 3), conv(96, 3)],
                     [avgpool(count_include_pad=False), conv(64)])
    block35 = residual(320, 10, 0.17,
                       [conv(32)],
                       [conv(32), conv(32, 3)],
                       [conv(32), conv(48, 3), conv(64, 3)])
    block17 = residual(1088, 20, 0.10,
                       [conv(192)],
                       [conv(128), conv(160, [1, 7]), conv(192, [7, 1])])
    mixed_7a = block([conv(256), valid(384, 3, 2)],
                     [conv(256), valid(288, 3, 2)],
                     [conv(256), conv(288, 3), valid(320, 3, 2)],
                     [maxpool()])
    block8 = [[conv(192)], [conv(192), conv(224, [1, 3]), conv(256, [3, 1])]]
    stages = [
        ("mixed_5", [mixed_5b, block35]),
        ("mixed_6", [reduction_a(256, 256, 384, 384), block17]),
        ("mixed_7", [mixed_7a, residual(2080, 9, 0.20, *block8),
                     residual(2080, 1, 1.0, *block8, act=False),
                     block([conv(1536)])]),  # conv2d_7b
    ]
    # timm's default drop_rate is 0; the paper trains with dropout keep-probability 0.8
    return genotype("inception_resnet_v2", "inception-resnet", stem, stages, dropout=0.2)


@register
def inception_resnet_v1() -> dict:
    """Inception-ResNet-v1 as the paper draws it (Szegedy et al. 2016, arXiv:1602.07261): stem of
    Figure 14, 5 x Inception-ResNet-A (Fig. 10), reduction A with k, l, m, n = 192, 192, 256, 384
    (Fig. 7, Table 1), 10 x Inception-ResNet-B (Fig. 11), reduction B (Fig. 12), 5 x Inception-
    ResNet-C (Fig. 13), average pool, dropout (keep 0.8), FC.

    The paper publishes no parameter count for this network (nor for any model in it) and neither
    torchvision nor timm implements it, so the 22,756,328 params here are checked only for
    self-consistency. The layout matches FaceNet's TF-slim inception_resnet_v1 (davidsandberg/facenet)
    up to its face-embedding head and its extra un-activated sixth Block8. The residual scales (0.17, 0.10, 0.20) are the ones
    TF-slim's and FaceNet's implementations use; the paper says only "between 0.1 and 0.3".
    Its 1x1 "Linear" up-projections are taken, as in TF-slim's v2, to have a bias and no norm.
    """
    stem = inception_resnet_stem() + [valid(256, 3, 2)]
    block_a = residual(256, 5, 0.17,
                       [conv(32)],
                       [conv(32), conv(32, 3)],
                       [conv(32), conv(32, 3), conv(32, 3)])
    block_b = residual(896, 10, 0.10,
                       [conv(128)],
                       [conv(128), conv(128, [1, 7]), conv(128, [7, 1])])
    reduction_b = block([maxpool()],
                        [conv(256), valid(384, 3, 2)],
                        [conv(256), valid(256, 3, 2)],
                        [conv(256), conv(256, 3), valid(256, 3, 2)])
    block_c = residual(1792, 5, 0.20,
                       [conv(192)],
                       [conv(192), conv(192, [1, 3]), conv(192, [3, 1])])
    stages = [
        ("inception_resnet_a", [block_a]),
        ("inception_resnet_b", [reduction_a(192, 192, 256, 384), block_b]),
        ("inception_resnet_c", [reduction_b, block_c]),
    ]
    return genotype("inception_resnet_v1", "inception-resnet", stem, stages, dropout=0.2)
