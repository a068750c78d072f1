"""One test per proxy rule (explorer/trial/proxy.py), plus: union draws always give a proxy."""
import space
from explorer.trial.proxy import make_proxy
from space.named import named
from space.sampling import load_space, sample


def test_depth_is_capped_per_block():
    proxy = make_proxy(named("resnet152"), 32, depth=2)
    assert [b.repeat for s in proxy.stages for b in s.blocks] == [2, 2, 2, 2]
    assert make_proxy(named("resnet152"), 32).stages[2].blocks[0].repeat == 36


def test_stem_strides_become_one():
    proxy = make_proxy(named("resnet50"), 32)
    assert [op.stride for op in proxy.stem] == [1, 1]
    assert proxy.stem[0].kernel == 7  # the stem's shape stays; only its downsampling goes
    assert space.complexity(proxy, in_channels=3).parts[0].size == (32, 32)


def test_strides_clamp_where_the_map_would_vanish():
    # Inception v4 at 16 px: its valid-padded reductions would shrink the map to nothing.
    g = named("inception_v4")
    try:
        space.complexity(g.model_copy(update={"stem": []}), 16)
        raise AssertionError("the unclamped network should not fit 16 px")
    except space.GenotypeError:
        pass
    proxy = make_proxy(g, 16, width=0.25, depth=1)
    sizes = [p.size for p in space.complexity(proxy).parts if p.name != "head"]
    assert min(min(s) for s in sizes) >= 2
    # a block that still fits keeps its stride
    resnet = make_proxy(named("resnet50"), 32)
    assert [p.size for p in space.complexity(resnet).parts[1:5]] == [(32, 32), (16, 16), (8, 8), (4, 4)]


def test_patchify_convs_lose_their_stride_as_odd_padded_convs():
    # InceptionNeXt on 8 px digits: the 4x4/4 stem becomes a 3x3, and the last 2x2/2 downsampling,
    # which would take the map below 2 px, becomes a 1x1; the proxy still validates and builds.
    proxy = make_proxy(named("inception_next_tiny"), 8, width=0.25, depth=1, in_channels=1, classes=10)
    assert (proxy.stem[0].kernel, proxy.stem[0].stride, proxy.stem[0].padding) == (3, 1, None)
    downs = [s.blocks[0].branches[0][0] for s in proxy.stages[1:]]
    assert [(d.kernel, d.stride) for d in downs] == [(2, 2), (2, 2), (1, 1)]
    again = space.load(space.dump(proxy))  # what a study stores reloads
    sizes = [p.size for p in space.complexity(again, in_channels=1).parts[:-1]]
    assert sizes == [(8, 8), (8, 8), (4, 4), (2, 2), (2, 2)]
    assert space.build(again, in_channels=1).eval()(__import__("torch").zeros(2, 1, 8, 8)).shape == (2, 10)


def test_width_is_scaled_and_groups_fit():
    g = named("resnext50_32x4d")
    proxy = make_proxy(g, 32, width=0.125)
    assert proxy.width == 0.125
    model = space.build(proxy, 10, 3)
    grouped = [m for m in model.modules() if getattr(m, "groups", 1) > 1]
    assert grouped and all(m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0 for m in grouped)
    assert any(m.groups < 32 for m in grouped)  # 128 * 0.125 = 16 channels can't hold 32 groups
    assert space.complexity(proxy).params < space.complexity(g).params / 20


def test_classes_and_resolution_follow_the_data():
    proxy = make_proxy(named("googlenet"), 16, in_channels=1, classes=10)
    assert (proxy.classes, proxy.resolution) == (10, 16)
    model = space.build(proxy, in_channels=1)
    assert model.eval()(__import__("torch").zeros(2, 1, 16, 16)).shape == (2, 10)


def test_every_union_draw_has_a_proxy():
    union = load_space("union")
    made = 0
    for seed in range(150):
        try:
            g = sample(union, seed)
            space.complexity(g, 224)
        except space.GenotypeError:
            continue
        proxy = make_proxy(g, 16, width=0.25, depth=2, in_channels=1, classes=10)
        space.complexity(proxy, in_channels=1)
        made += 1
    assert made >= 120
