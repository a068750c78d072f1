"""space.graph: the genotype as a DAG of ops whose costs sum exactly to space.complexity, and its exports."""
from __future__ import annotations

import json

import networkx as nx
import pytest
from torch import nn

import space
from space.graph import export, to_graph
from space.named import named, names


def conv(out, kernel=1, stride=1, **fields):
    return dict(op="conv", out=out, kernel=kernel, stride=stride, **fields)


def custom(width: float = 1.0, norm: str = "batch") -> dict:
    """Every structural case: nested branches, pool branch, sep, dense repeat, projection, pad, sum merge, aux."""
    inception = dict(branches=[
        [conv(8)],
        [conv(8), dict(op="branches", branches=[[conv(8, [1, 3])], [conv(8, [3, 1])]])],  # nested split
        [dict(op="pool", kernel=3, stride=1), conv(8)],                                   # pool + 1x1 projection
        [dict(op="sep", out=12, kernel=3, mid="na")],
    ])
    dense = dict(repeat=3, skip="dense", branches=[[conv(8, 3, order="nac")]])
    transition = dict(branches=[[dict(op="norm"), dict(op="act"), conv(0.5, order="c"),
                                 dict(op="pool", type="avg", kernel=2, stride=2)]])
    projection = dict(repeat=2, skip="residual", act=True,
                      branches=[[conv(32, 3, 2), conv(32, 3, order="cn")]])
    pad = dict(skip="residual", shortcut="pad", scale=0.5,
               branches=[[conv(48, 3, 2), conv(48, 3, order="cn")]],
               aux=dict(ops=[conv(16)], hidden=[32], dropout=0.3))
    summed = dict(skip="residual", merge="sum", post=[dict(op="dropout", p=0.1)],
                  branches=[[conv(48, 3, order="cn")], [conv(48, [1, 5], order="cn")]])
    return dict(name="custom", resolution=32, width=width, norm=norm,
                stem=[conv(16, 3, 2)],
                stages=[dict(name="mixed", blocks=[inception]),
                        dict(name="dense", blocks=[dense, transition]),
                        dict(name="res", blocks=[projection, pad, summed])],
                head=dict(hidden=[64], dropout=0.2))


def totals(graph: nx.DiGraph) -> tuple[int, int, int]:
    return tuple(sum(d[k] for _, d in graph.nodes(data=True)) for k in ("flops", "params", "acts"))


def of_type(graph: nx.DiGraph, op_type: str, role: str | None = None) -> list[str]:
    return [n for n, d in graph.nodes(data=True) if d["type"] == op_type and (role is None or d.get("role") == role)]


def conv2d_count(g) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in space.build(g, num_classes=10).modules())


CASES = [("resnet50", lambda: named("resnet50"), 224), ("custom", lambda: space.load(custom()), None),
         ("custom-w0.75-nonorm", lambda: space.load(custom(0.75, "none")), 40)]


@pytest.mark.parametrize("name,make,resolution", CASES, ids=[c[0] for c in CASES])
def test_costs_sum_to_complexity(name, make, resolution):
    g = make()
    graph = to_graph(g, resolution, num_classes=10)
    c = space.complexity(g, resolution, num_classes=10)
    assert totals(graph) == (c.flops, c.params, c.acts)
    assert (graph.graph["flops"], graph.graph["params"], graph.graph["acts"]) == (c.flops, c.params, c.acts)


@pytest.mark.parametrize("name", names())
def test_every_named_genotype_sums(name):
    g = named(name)
    graph = to_graph(g)
    c = space.complexity(g)
    assert totals(graph) == (c.flops, c.params, c.acts)
    assert nx.is_directed_acyclic_graph(graph)


@pytest.mark.parametrize("name,make,resolution", CASES, ids=[c[0] for c in CASES])
def test_structure(name, make, resolution):
    g = make()
    graph = to_graph(g, resolution, num_classes=10)
    assert nx.is_directed_acyclic_graph(graph)
    assert [n for n in graph if graph.in_degree(n) == 0] == ["in"]
    assert [n for n in graph if graph.out_degree(n) == 0] == ["out"]
    assert graph.nodes["in"]["type"] == "input" and graph.nodes["out"]["type"] == "output"
    # a sep op is one node but two Conv2d (depthwise + pointwise); shortcut and aux convs count too
    assert len(of_type(graph, "conv")) + 2 * len(of_type(graph, "sep")) == conv2d_count(g)
    for n in of_type(graph, "add", "residual"):
        assert graph.in_degree(n) == 2
    for n in of_type(graph, "concat", "dense"):
        assert graph.in_degree(n) == 2
    assert len(of_type(graph, "add", "residual")) == sum(
        b.repeat for s in g.stages for b in s.blocks if b.skip == "residual")
    for n, d in graph.nodes(data=True):
        assert set(d) >= {"type", "kernel", "stride", "groups", "in_channels", "out_channels", "shape",
                          "flops", "params", "acts", "path", "stage", "label"}
        assert len(d["shape"]) == 3


def test_resnet50_shape():
    graph = to_graph(named("resnet50"))
    assert len(of_type(graph, "conv")) == 53  # 49 in the bottlenecks and stem + 4 projection shortcuts
    assert len(of_type(graph, "conv", "shortcut")) == 4
    assert len(of_type(graph, "norm", "shortcut")) == 4
    assert len(of_type(graph, "linear")) == 1
    by_path = {d["path"]: d for _, d in graph.nodes(data=True)}
    third = by_path["stages[1].blocks[0]#2.branches[0][2]"]
    assert (third["type"], third["kernel"], third["stride"], third["shape"]) == ("conv", 1, 1, [512, 28, 28])
    first = by_path["stages[1].blocks[0].branches[0][1]"]
    assert (first["stride"], first["shape"], first["stage"]) == (2, [128, 28, 28], "layer2")
    assert by_path["stages[1].blocks[0]#1.branches[0][1]"]["stride"] == 1  # repetitions keep stride 1
    assert graph.nodes["out"]["shape"] == [1000, 1, 1]


def test_custom_details():
    g = space.load(custom())
    graph = to_graph(g, num_classes=10)
    nodes = dict(graph.nodes(data=True))
    by_path = {d["path"]: n for n, d in nodes.items()}
    # the inception block: 4 branches concatenated, the nested split merged by its own concat
    block_merge = by_path["stages[0].blocks[0].merge"]
    assert nodes[block_merge]["type"] == "concat" and graph.in_degree(block_merge) == 4
    assert nodes[block_merge]["shape"] == [8 + 16 + 8 + 12, 16, 16]
    nested = by_path["stages[0].blocks[0].branches[1][1]"]
    assert nodes[nested]["type"] == "concat" and graph.in_degree(nested) == 2
    assert nodes[by_path["stages[0].blocks[0].branches[1][1].branches[0][0]"]]["kernel"] == [1, 3]
    # dense: three repetitions, each concatenating its input with its new 8 channels
    dense = of_type(graph, "concat", "dense")
    assert [nodes[n]["shape"][0] for n in dense] == [52, 60, 68]
    assert any(graph.edges[e]["kind"] == "dense" for e in graph.in_edges(dense[0]))
    # projection (conv-norm) on the first repetition only; pad shortcut as its own parameter-free node
    assert [nodes[n]["path"] for n in of_type(graph, "conv", "shortcut")] == ["stages[2].blocks[0].shortcut"]
    pad = of_type(graph, "shortcut")
    assert len(pad) == 1 and nodes[pad[0]]["params"] == 0 and nodes[pad[0]]["stride"] == 2
    assert nodes[by_path["stages[2].blocks[1].skip"]]["scale"] == 0.5
    # sum merge of two branches feeding the residual add
    merge = by_path["stages[2].blocks[2].merge"]
    assert nodes[merge]["type"] == "add" and nodes[merge]["role"] == "branches"
    # aux head: params only, ends in the output node
    aux = [n for n, d in nodes.items() if d.get("aux")]
    assert aux and all(nodes[n]["flops"] == 0 and nodes[n]["acts"] == 0 for n in aux)
    assert sum(nodes[n]["params"] for n in aux) > 0
    assert graph.in_degree("out") == 2
    # head: adaptive avg pool costs c*h*w FLOPs; hidden linear, act, dropout, classifier
    head = [d["type"] for d in nodes.values() if d["stage"] == "head"]
    assert head == ["adaptive_pool", "linear", "act", "dropout", "linear"]


def test_errors_match_complexity():
    bad = custom()
    for op in bad["stages"][2]["blocks"][1]["branches"][0]:
        op["out"] = 16  # the pad shortcut can't shrink 32 channels to 16
    with pytest.raises(space.GenotypeError) as graph_err:
        to_graph(bad)
    with pytest.raises(space.GenotypeError) as cost_err:
        space.complexity(bad)
    assert str(graph_err.value) == str(cost_err.value)
    with pytest.raises(space.GenotypeError):
        to_graph(named("resnet50"), resolution=4)


@pytest.fixture(scope="module")
def small_graph():
    return to_graph(space.load(custom()), num_classes=10)


def test_export_graphml(small_graph):
    parsed = nx.parse_graphml(export(small_graph, "graphml"))
    assert parsed.number_of_nodes() == small_graph.number_of_nodes()
    assert parsed.number_of_edges() == small_graph.number_of_edges()
    assert sum(d["flops"] for _, d in parsed.nodes(data=True)) == small_graph.graph["flops"]
    assert json.loads(parsed.nodes["in"]["shape"]) == small_graph.nodes["in"]["shape"]


def test_export_json(small_graph):
    data = json.loads(export(small_graph, "json"))
    assert len(data["nodes"]) == small_graph.number_of_nodes()
    assert data["graph"]["flops"] == small_graph.graph["flops"]


def test_export_dot(small_graph):
    text = export(small_graph, "dot")
    assert text.startswith("digraph")
    assert text.count(" -> ") == small_graph.number_of_edges()
    assert "subgraph cluster_" in text and text.rstrip().endswith("}")


def test_export_html(small_graph):
    page = export(small_graph, "html")
    assert "plotly-graph-div" in page
    assert "cdn.plot.ly" not in page and "<script src=" not in page  # self-contained, works offline
    assert "FLOPs (multiply-adds)" in page
    assert len(page) > 1_000_000  # the plotly.js bundle is inline


def test_unknown_format(small_graph):
    with pytest.raises(ValueError, match="format must be one of dot, graphml, json, html"):
        export(small_graph, "svg")
