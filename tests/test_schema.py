"""The grammar: validation with field paths, canonical form, round trips, the builder's module tree."""
import copy
import json
import subprocess
import sys

import pytest
import torch
import yaml

import space
from space import GenotypeError
from space.named import named


def conv(out, kernel=3, stride=1, **kw):
    return dict(op="conv", out=out, kernel=kernel, stride=stride, **kw)


def base() -> dict:
    """A small valid genotype that touches most fields."""
    return dict(
        name="tiny", family="test", resolution=32, classes=10,
        stem=[conv(16)],
        stages=[
            dict(name="a", blocks=[dict(repeat=2, skip="residual", act=True,
                                        branches=[[conv(16), conv(16, order="cn")]])]),
            dict(name="b", blocks=[dict(branches=[[conv(16, 1)], [conv(8, 1), conv(16, [1, 3]), conv(16, [3, 1])],
                                                  [dict(op="pool", kernel=3), conv(8, 1)]]),
                                   dict(branches=[[conv(32, 3, 2, groups=4)]])]),
            dict(name="c", blocks=[dict(repeat=2, skip="dense", branches=[[conv(16, 1, order="nac"), conv(8, order="nac")]])]),
        ],
        head=dict(hidden=[32], dropout=0.1),
    )


def edit(path, value):
    """A copy of base() with the field at `path` (a list of keys) set to value (None deletes)."""
    doc = base()
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DELETE = object()
BLOCK = ["stages", 1, "blocks", 0]

# (document, expected path, a phrase of the reason)
MALFORMED = [
    (edit(BLOCK + ["branches", 1, 1, "kernel"], 4), "stages[1].blocks[0].branches[1][1].kernel", "4 is even; kernels must be odd"),
    (edit(BLOCK + ["branches", 1, 1, "kernel"], [1, 4]), "stages[1].blocks[0].branches[1][1].kernel", "4 is even"),
    (edit(BLOCK + ["branches", 1, 1, "kernel"], [1, 3, 3]), "stages[1].blocks[0].branches[1][1].kernel", "one int or [height, width]"),
    (edit(BLOCK + ["branches", 1, 1, "kernel"], 0), "stages[1].blocks[0].branches[1][1].kernel", "at least 1"),
    (edit(BLOCK + ["branches", 1, 1, "kernal"], 3), "stages[1].blocks[0].branches[1][1].kernal", "did you mean 'kernel'"),
    (edit(BLOCK + ["branches", 1, 1, "op"], "cnov"), "stages[1].blocks[0].branches[1][1].op", "did you mean 'conv'"),
    (edit(BLOCK + ["branches", 1, 1, "op"], DELETE), "stages[1].blocks[0].branches[1][1]", "needs 'op:'"),
    (edit(BLOCK + ["branches", 1, 1, "out"], DELETE), "stages[1].blocks[0].branches[1][1].out", "required"),
    (edit(BLOCK + ["branches", 1, 1, "out"], -8), "stages[1].blocks[0].branches[1][1].out", "positive"),
    (edit(BLOCK + ["branches", 1, 1, "out"], 12.5), "stages[1].blocks[0].branches[1][1].out", "at most 8"),
    (edit(BLOCK + ["branches", 1, 1, "out"], "wide"), "stages[1].blocks[0].branches[1][1].out", "wide"),
    (edit(BLOCK + ["branches", 1, 1, "stride"], 0), "stages[1].blocks[0].branches[1][1].stride", "0 is out of range; stride is 1 to 32"),
    (edit(BLOCK + ["branches", 1, 1, "order"], "cnn"), "stages[1].blocks[0].branches[1][1].order", "at most once"),
    (edit(BLOCK + ["branches", 1, 1, "order"], "na"), "stages[1].blocks[0].branches[1][1].order", "include 'c'"),
    (edit(BLOCK + ["branches", 1, 1, "order"], "cnx"), "stages[1].blocks[0].branches[1][1].order", "letters"),
    (edit(BLOCK + ["branches", 1], []), "stages[1].blocks[0].branches", "branch 1 is empty"),
    (edit(BLOCK + ["branches"], []), "stages[1].blocks[0].branches", "is empty; it needs at least 1 item"),
    (edit(BLOCK + ["merge"], "mean"), "stages[1].blocks[0].merge", "expected 'concat' or 'sum'"),
    (edit(BLOCK + ["merge"], "sum"), "stages[1].blocks[0].branches[2]", "sum merge needs equal channels"),
    (edit(["stages", 1, "blocks", 1, "branches", 0, 0, "groups"], 3), "stages[1].blocks[1].branches[0][0].groups", "3 groups don't divide"),
    (edit(["stages", 1, "blocks", 1, "branches", 0, 0, "groups"], 0), "stages[1].blocks[1].branches[0][0].groups", "out of range; groups is 1 to"),
    (edit(["stages", 0, "blocks", 0, "repeat"], -2), "stages[0].blocks[0].repeat", "-2 is out of range; repeat is 1 to 1000"),
    (edit(["stages", 0, "blocks", 0, "repeat"], 1.5), "stages[0].blocks[0].repeat", "expected a whole number, got 1.5 (a number)"),
    (edit(["stages", 0, "blocks", 0, "skip"], "resid"), "stages[0].blocks[0].skip", "expected"),
    (edit(["stages", 0, "blocks", 0, "scale"], 0.2) | {}, None, None),  # valid: residual scale
    (edit(["stages", 2, "blocks", 0, "scale"], 0.2), "stages[2].blocks[0].scale", "is a residual scale"),
    (edit(["stages", 0, "blocks", 0, "shortcut"], "pad") | {}, None, None),  # valid: nothing to pad
    (edit(["stages", 0, "blocks", 0, "branches", 0, 1, "padding"], 0), "stages[0].blocks[0].skip", "can't follow"),
    (edit(["stages", 2, "blocks", 0, "branches", 0, 1, "stride"], 2), "stages[2].blocks[0].skip", "dense block must keep"),
    (edit(["stages"], []), "stages", "is empty; it needs at least 1 item"),
    (edit(["stages"], DELETE), "stages", "required"),
    (edit(["stages", 0, "blocks"], DELETE), "stages[0].blocks", "required"),
    (edit(["stages", 0, "colour"], "red"), "stages[0].colour", "unknown field"),
    (edit(["act"], "tanhh"), "act", "expected"),
    (edit(["norm"], "group"), "norm", "expected"),
    (edit(["width"], 0), "width", "0 is out of range; width is 0.001 to 16"),
    (edit(["resolution"], 0), "resolution", "0 is out of range; resolution is 1 to 8192"),
    (edit(["resolution"], 1), "stages[1].blocks[1].branches[0][0].stride", "vanishes at input resolution 1"),
    (edit(["stem", 0, "stride"], 32) | {"resolution": 16}, "stem[0].stride", "vanishes"),
    (edit(["stem", 0, "padding"], 0) | {"resolution": 2}, "stem[0].kernel", "3x3 window doesn't fit the 2x2"),
    (edit(["head", "hidden"], [0]), "head.hidden[0]", "0 is out of range; hidden is 1 to 65536"),
    (edit(["head", "dropout"], 1.0), "head.dropout", "1.0 is out of range; dropout is 0 to 0.999"),
    (edit(["head", "pool"], "median"), "head.pool", "expected"),
    (edit(["stem", 0], dict(op="pool", kernel=3, padding=2)), "stem[0].padding", "2 must be at most half"),
    (edit(["stem", 0], dict(op="sep", out=16, mid="x")), "stem[0].mid", "must be one of"),
    (edit(["stem", 0], dict(op="dropout", p=2)), "stem[0].p", "2 is out of range; p is 0 to 0.999"),
    (edit(["stem", 0], dict(op="branches", branches=[[conv(8)], [conv(8, stride=2)]])), "stem[0].branches[1]", "must agree in size"),
    (edit(["stem"], "conv"), "stem", "expected a list, got 'conv' (text)"),
    # channel-split branches (issue 13): the block's input has 16 channels and three branches
    (edit(BLOCK + ["split"], [0.5, 0.25, 0.25]) | {}, None, None),  # valid: 8 | 4 | 4 channels
    (edit(BLOCK + ["split"], [8, 4, 4]) | {}, None, None),  # valid: the same as counts
    (edit(BLOCK + ["split"], [0.5, 0.25, 0.125]), "stages[1].blocks[0].split", "sum to 0.875, not 1"),
    (edit(BLOCK + ["split"], [0.5, 0.5]), "stages[1].blocks[0].split", "2 slices for 3 branches"),
    (edit(BLOCK + ["split"], [8, 0.25, 0.25]), "stages[1].blocks[0].split", "mixes channel counts and fractions"),
    (edit(BLOCK + ["split"], [8, 4, 2]), "stages[1].blocks[0].split", "add up to 14 channels, but the input has 16"),
    (edit(BLOCK + ["split"], [0.96, 0.02, 0.02]), "stages[1].blocks[0].split", "leaves branch 1 no channels"),
    (edit(BLOCK + ["split"], [-8, 12, 12]), "stages[1].blocks[0].split", "neither a channel count"),
    (edit(BLOCK + ["split"], [1.5, 0.25, 0.25]), "stages[1].blocks[0].split", "neither a channel count"),
    (edit(["stem", 0], dict(op="branches", split=[0.5, 0.25], branches=[[conv(8)], [conv(8)]])), "stem[0].split",
     "sum to 0.75"),
    (edit(BLOCK + ["branches", 0, 0], dict(op="identity", out=8)), "stages[1].blocks[0].branches[0][0].out",
     "unknown field"),
    # patchify kernels: even, square, stride = kernel, padding 0; any other even kernel is refused
    (edit(["stem", 0], conv(16, 4, 4, padding=0)) | {}, None, None),  # valid
    (edit(["stem", 0], conv(16, [2, 2], 2, padding=0)) | {}, None, None),  # valid: [2, 2] is 2
    (edit(["stem", 0], conv(16, 4, 4)), "stem[0].kernel", "4 is even; kernels must be odd, except a square patchify"),
    (edit(["stem", 0], conv(16, 4, 4, padding=1)), "stem[0].kernel", "with stride 4 and padding 0"),
    (edit(["stem", 0], conv(16, 4, 2, padding=0)), "stem[0].kernel", "4 is even"),
    (edit(["stem", 0], conv(16, [2, 4], 2, padding=0)), "stem[0].kernel", "2 is even; kernels must be odd, except a square"),
    (edit(["stem", 0], dict(op="sep", out=16, kernel=2)), "stem[0].kernel", "2 is even"),
    # depthwise groups
    (edit(["stages", 0, "blocks", 0, "branches", 0, 1, "groups"], "depthwise") | {}, None, None),  # valid: 16 -> 16
    (edit(["stages", 1, "blocks", 1, "branches", 0, 0, "groups"], "depthwise"),
     "stages[1].blocks[1].branches[0][0].groups", "40 groups don't divide 32 channels"),
    (edit(["stages", 1, "blocks", 1, "branches", 0, 0, "groups"], "dw"), "stages[1].blocks[1].branches[0][0].groups",
     "'dw'"),
    # highway skips, layer scale, shortcut
    (edit(["stages", 0, "blocks", 0, "skip"], "highway") | {}, None, None),  # valid
    (edit(["stages", 1, "blocks", 1], dict(skip="highway", shortcut="pad", branches=[[conv(32, 3, 2)]])),
     "stages[1].blocks[1].shortcut", "pad can't shrink 40 to 32 channels"),
    (edit(["stages", 1, "blocks", 1], dict(skip="highway", branches=[[conv(32, 3, 2, padding=0)]])),
     "stages[1].blocks[1].skip", "can't follow"),
    (edit(["stages", 1, "blocks", 1], dict(skip="highway", scale=0.5, branches=[[conv(32, 3, 2)]])) | {}, None, None),
    (edit(["stages", 0, "blocks", 0, "layer_scale"], 1e-6) | {}, None, None),  # valid
    (edit(["stages", 0, "blocks", 0, "layer_scale"], 0), "stages[0].blocks[0].layer_scale", "0 is out of range; layer_scale is 1e-09 to 16"),
    (edit(BLOCK + ["layer_scale"], 1e-6), "stages[1].blocks[0].layer_scale", "scales a residual branch"),
    (edit(BLOCK + ["shortcut"], "conv"), "stages[1].blocks[0].shortcut", "this block's skip is none; drop it"),
    (edit(["stages", 2, "blocks", 0, "shortcut"], "pad"), "stages[2].blocks[0].shortcut", "skip is dense"),
    # layer norm: channels-first on maps (norm: layer), on the head's hidden vectors (head.norm)
    (edit(["norm"], "layer") | {}, None, None),  # valid
    (edit(["head", "norm"], "layer") | {}, None, None),  # valid: base() has a hidden layer
    (edit(["head"], dict(norm="layer")), "head.norm", "there are none; add hidden"),
    (edit(["head", "norm"], "batch"), "head.norm", "expected 'none' or 'layer'"),
]


@pytest.mark.parametrize("doc,path,reason", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_documents_name_the_field(doc, path, reason):
    if path is None:  # a control: the document is fine
        space.complexity(doc)
        return
    with pytest.raises(GenotypeError) as info:
        space.complexity(doc)
    message = str(info.value)
    assert info.value.path == path, message
    assert reason in message, message
    assert "\n" not in message


def test_at_least_thirty_malformed_documents():
    assert sum(path is not None for _, path, _ in MALFORMED) >= 30


def test_base_genotype_builds_and_runs():
    g = space.load(base())
    model = space.build(g)
    logits = model.eval()(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == space.complexity(g).params


def test_canonical_form_round_trips_and_hashes_stably():
    g = space.load(base())
    doc = space.dump(g)
    assert space.load(doc) == g
    assert space.load(json.loads(json.dumps(doc))) == g
    assert space.load(yaml.safe_load(space.to_yaml(g))) == g
    # the same genotype written differently: defaults spelled out, square kernels as pairs, keys reordered
    verbose = copy.deepcopy(base())
    verbose["stem"][0].update(kernel=[3, 3], groups=1, order="cna")
    verbose["width"] = 1.0
    verbose = dict(reversed(list(verbose.items())))
    assert space.dump(space.load(verbose)) == doc
    assert space.digest(space.load(verbose)) == space.digest(g)
    assert hash(space.load(verbose)) == hash(g)
    other = edit(["stem", 0, "out"], 24)
    assert space.digest(space.load(other)) != space.digest(g)


def test_module_tree_mirrors_the_genotype():
    model = space.build(space.load(base()))
    names = dict(model.named_modules())
    assert "stages.a.block0_0.branches.0.0_conv.conv" in names
    assert "stages.b.block0.branches.1.2_conv.conv" in names
    assert "stages.c.block0_1.branches.0.1_conv.norm" in names
    assert isinstance(names["stages.b.block1.branches.0.0_conv.conv"], torch.nn.Conv2d)
    assert names["stages.b.block1.branches.0.0_conv.conv"].groups == 4


def test_explicit_padding_is_never_same():
    model = space.build(space.load(base()))
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert not isinstance(m.padding, str)


def test_yaml_text_errors_are_one_line():
    with pytest.raises(GenotypeError, match="not valid YAML"):
        space.load("stages: [1, 2\n  - x: :")


def test_width_multiplier_scales_channels():
    g = space.load(base() | {"width": 0.5})
    model = space.build(g)
    assert model.stem[0].conv.out_channels == 8
    assert sum(p.numel() for p in model.parameters()) == space.complexity(g).params


def test_cli_errors_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.dump(edit(BLOCK + ["branches", 1, 1, "kernel"], 4)))
    for args in (["show", str(bad)], ["show", "resnet5O"], ["show", "missing.yaml"]):
        run = subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True)
        assert run.returncode == 2, run
        assert "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
    run = subprocess.run([sys.executable, "-m", "cli", "show", str(bad)], capture_output=True, text=True)
    assert "stages[1].blocks[0].branches[1][1].kernel: 4 is even; kernels must be odd" in run.stderr


def test_show_json_is_machine_readable():
    run = subprocess.run([sys.executable, "-m", "cli", "show", "resnet50", "--json"], capture_output=True, text=True)
    data = json.loads(run.stdout)
    assert data["params"] == 25_557_032
    assert data["flops"] == space.complexity(named("resnet50")).flops
    assert data["resolution"] == 224 and data["name"] == "resnet50"
    assert space.load(data["genotype"]) == named("resnet50")
