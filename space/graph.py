"""A genotype as a graph of ops, and its export to DOT, GraphML, JSON and HTML.

`to_graph` unrolls a genotype into a `networkx.DiGraph`: one node per op of the
stem, of every repetition of every block (repetitions after the first run with
stride 1, as in `Stage.complexity`), of residual shortcut projections, branch
merges, channel splits, residual adds, highway gates, layer scales, dense
concatenations, the head and auxiliary heads, between one `input` and one
`output` node. Edges are data flow.

The nodes are the steps of the genotype's trace (space.trace), with their
FLOPs (multiply-adds, fvcore convention), params and activations; `space.complexity`
sums the same walk, so the nodes sum exactly to it. Auxiliary heads only run
in training: their nodes carry their params and zero FLOPs and activations.

The HTML export is a self-contained plotly page rather than a graphviz SVG:
graphviz's `dot` binary is not a Python dependency and isn't installed on CI,
while plotly is already a dependency and gives hover, zoom and pan offline.
"""
from __future__ import annotations

import html as _html
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import networkx as nx

from . import schema as S
from .network import trace
from .ops import Context, as_pair, groups_of, stride_at
from .resolve import load
from .trace import Step

FORMATS = ("dot", "graphml", "json", "html")


def _op_attrs(spec, c_in: int, first: bool, ctx: Context) -> dict:
    """Display attributes of a leaf op: kernel (int, or [h, w] when not square), effective stride, groups, ..."""
    attrs: dict[str, Any] = {}
    if hasattr(spec, "kernel"):
        kh, kw = as_pair(spec.kernel)
        attrs["kernel"] = kh if kh == kw else [kh, kw]
    if hasattr(spec, "stride"):
        attrs["stride"] = stride_at(spec, first)
    if isinstance(spec, S.Conv):
        attrs.update(groups=groups_of(spec, c_in), order=spec.order)
    elif isinstance(spec, S.Sep):
        attrs.update(groups=c_in, order=spec.order, mid=spec.mid)  # groups: the depthwise conv's
    elif isinstance(spec, (S.Pool, S.AdaptivePool)):
        attrs["pool"] = spec.type
        if isinstance(spec, S.AdaptivePool):
            attrs["output"] = spec.output
    elif isinstance(spec, S.Dropout):
        attrs["p"] = spec.p
    elif isinstance(spec, S.Act):
        attrs["act"] = ctx.act
    elif isinstance(spec, S.Norm):
        attrs["norm"] = ctx.norm
    return attrs


def _norm_label(norm: str) -> str:
    return {"batch": "bn", "layer": "ln"}.get(norm, "norm (none)")


def _kernel_text(kernel) -> str:
    return f"{kernel}x{kernel}" if isinstance(kernel, int) else f"{kernel[0]}x{kernel[1]}"


def _op_label(spec, attrs: dict, out: tuple, ctx: Context) -> str:
    stride = f"/{attrs['stride']}" if attrs.get("stride", 1) > 1 else ""
    if isinstance(spec, (S.Conv, S.Sep)):
        groups = f" g{attrs['groups']}" if isinstance(spec, S.Conv) and attrs["groups"] > 1 else ""
        groups = " dw" if isinstance(spec, S.Conv) and spec.groups == "depthwise" else groups
        return f"{spec.op} {_kernel_text(attrs['kernel'])}{stride} {out[0]}{groups}"
    if isinstance(spec, S.Pool):
        return f"{spec.type}pool {_kernel_text(attrs['kernel'])}{stride}"
    if isinstance(spec, S.AdaptivePool):
        return f"{spec.type}pool ->{spec.output}x{spec.output}"
    if isinstance(spec, S.Norm):
        return _norm_label(ctx.norm)
    if isinstance(spec, S.Act):
        return ctx.act
    if isinstance(spec, S.Dropout):
        return f"dropout {spec.p:g}"
    return spec.op


def to_graph(genotype, resolution: int | None = None, num_classes: int | None = None,
             in_channels: int = 3) -> nx.DiGraph:
    """The genotype unrolled into a DAG of ops, input -> ... -> output: its trace with edges.

    Node ids are short strings ('in', 'n1', 'n2', ..., 'out'). Every node has
    `type`, `label`, `path` (the genotype field; repetitions r >= 1 of a block
    carry a `#r` suffix, e.g. `stages[1].blocks[0]#2.branches[0][2]`), `stage`,
    `kernel`, `stride` (effective), `groups`, `in_channels`, `out_channels`,
    `shape` ([C, H, W]; [n, 1, 1] after the head flattens), `flops`, `params`,
    `acts`; some carry more (`role`, `order`, `pool`, `p`, `scale`, `aux`, ...).
    Edge `kind` is data, shortcut, dense or aux. Node costs sum exactly to
    `space.complexity(...)`, whose totals are also in `graph.graph`.
    Raises `GenotypeError` exactly as `space.complexity` does.
    """
    g = load(genotype)
    num_classes = num_classes or g.classes
    t = trace(g, resolution, num_classes, in_channels)
    in_channels, res, _ = t.shapes["input"]
    graph = nx.DiGraph(name=g.name or "genotype", resolution=res, num_classes=num_classes,
                       in_channels=in_channels, flops=t.flops, params=t.params, acts=t.acts)
    graph.add_node("in", **_node("input", f"input {in_channels}x{res}x{res}", "", None, None, t.shapes["input"]))
    ids = [f"n{k}" for k in range(1, len(t.steps) + 1)]
    for node, step in zip(ids, t.steps):
        graph.add_node(node, **_step_node(step, t.ctx))
        for src, kind in step.sources:
            graph.add_edge("in" if src is None else ids[src], node, kind=kind)
    graph.add_node("out", **_node("output", f"output {num_classes}", "", None, num_classes, (num_classes, 1, 1)))
    graph.add_edge(ids[-1], "out", kind="data")  # the walk ends at the main head's classifier
    for k, step in enumerate(t.steps):
        if step.aux and step.attrs.get("role") == "classifier":
            graph.add_edge(ids[k], "out", kind="aux")  # training returns (logits, aux logits)
    return graph


def _node(type: str, label: str, path: str, stage: str | None, c_in: int | None, shape: tuple,
          flops: int = 0, params: int = 0, acts: int = 0, **attrs: Any) -> dict:
    """A node's attributes: the common ones every node carries (None where they don't apply), then its own."""
    data = dict(type=type, label=label, path=path, stage=stage, kernel=None, stride=None, groups=None,
                in_channels=c_in, out_channels=shape[0], shape=list(shape), flops=flops, params=params, acts=acts)
    data.update(attrs)
    return data


def _step_node(step: Step, ctx: Context) -> dict:
    attrs = dict(step.attrs)
    if step.spec is not None:
        attrs.update(_op_attrs(step.spec, step.shape_in[0], step.first, ctx))
    data = _node(step.type, _label(step, attrs, ctx), step.path, step.stage, step.shape_in[0], step.shape,
                 step.flops, step.params, step.acts, **attrs)
    if step.aux:
        data["aux"] = True
    return data


def _label(step: Step, attrs: dict, ctx: Context) -> str:
    """What a node shows: the op as its spec says, or the structure around the ops, by role and type."""
    if step.spec is not None:
        return _op_label(step.spec, attrs, step.shape, ctx)
    role, c_in, c_out = attrs.get("role"), step.shape_in[0], step.shape[0]
    scale = "" if attrs.get("scale", 1.0) == 1.0 else f" x{attrs['scale']:g}"
    stride = f"/{attrs['stride']}" if attrs.get("stride", 1) > 1 else ""
    if step.type == "norm":
        return _norm_label(attrs["norm"])
    if step.type == "act":
        return ctx.act
    if step.type == "dropout":
        return f"dropout {attrs['p']:g}"
    if step.type == "linear":
        return f"fc {c_in}->{c_out}"
    if role == "shortcut":
        return f"pad shortcut {stride}".rstrip() if step.type == "shortcut" else f"conv 1x1{stride} {c_out}"
    return {"split": lambda: "split " + "/".join(map(str, attrs["sizes"])),
            "branches": lambda: "concat" if step.type == "concat" else "sum",
            "layer_scale": lambda: f"layer scale {attrs['init']:g}",
            "dense": lambda: "dense concat",
            "gate": lambda: f"gate conv 1x1 {c_out} + sigmoid",
            "highway": lambda: "highway" + scale,
            "residual": lambda: "add" + scale}[role]()


# ============================================================================ export

def export(graph: nx.DiGraph, fmt: str) -> str:
    """The graph as text: 'dot' (Graphviz), 'graphml', 'json' (node-link) or 'html' (self-contained plotly)."""
    if fmt == "dot":
        return _dot(graph)
    if fmt == "graphml":
        return "\n".join(nx.generate_graphml(_scalar_graph(graph))) + "\n"
    if fmt == "json":
        try:
            data = nx.node_link_data(graph, edges="edges")
        except TypeError:  # networkx < 3.4
            data = nx.node_link_data(graph)
        return json.dumps(data, default=str)
    if fmt == "html":
        return _html_page(graph)
    raise ValueError("format must be one of dot, graphml, json, html")


def _scalar(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _scalar_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """A copy GraphML can hold: scalar values, one type per attribute name, None left out."""
    out = nx.DiGraph()
    out.graph.update({k: _scalar(v) for k, v in graph.graph.items() if v is not None})
    for n, d in graph.nodes(data=True):
        out.add_node(n, **{k: _scalar(v) for k, v in d.items() if v is not None})
    for u, v, d in graph.edges(data=True):
        out.add_edge(u, v, **{k: _scalar(x) for k, x in d.items() if x is not None})
    for items in (out.nodes.values(), [d for _, _, d in out.edges(data=True)], [out.graph]):
        types: dict[str, set] = {}
        for d in items:
            for k, v in d.items():
                types.setdefault(k, set()).add(type(v))
        for k, ts in types.items():
            if len(ts) == 1:
                continue
            cast = float if ts <= {int, float, bool} else str  # e.g. kernel 3 beside kernel "[1, 7]"
            for d in items:
                if k in d:
                    d[k] = cast(d[k])
    return out


def _dot_quote(text: Any) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot(graph: nx.DiGraph) -> str:
    """Graphviz DOT text written directly (no pydot / pygraphviz needed), one cluster per stage."""
    name = graph.graph.get("name", "genotype")
    lines = [f"digraph {_dot_quote(name)} {{",
             "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555"];']
    stages: dict[Any, list[str]] = {}
    for n, d in graph.nodes(data=True):
        stages.setdefault(d.get("stage"), []).append(n)
    for k, (stage, nodes) in enumerate(stages.items()):
        indent = "  "
        if stage is not None:
            lines.append(f"  subgraph cluster_{k} {{")
            lines.append(f"    label={_dot_quote(stage)}; style=rounded; color=\"#bbbbbb\";")
            indent = "    "
        for n in nodes:
            d = graph.nodes[n]
            tip = f"{d['path'] or d['type']}: {d['flops']:,} FLOPs (multiply-adds), {d['params']:,} params"
            style = ', style="rounded,filled,dashed"' if d.get("aux") else ""
            lines.append(f"{indent}{_dot_quote(n)} [label={_dot_quote(d['label'])}, "
                         f"fillcolor={_dot_quote(_colour(d['type']))}, tooltip={_dot_quote(tip)}{style}];")
        if stage is not None:
            lines.append("  }")
    for u, v, d in graph.edges(data=True):
        style = {"shortcut": " [style=dashed]", "dense": " [style=dashed, color=\"#1f77b4\"]",
                 "aux": " [style=dotted]"}.get(d.get("kind"), "")
        lines.append(f"  {_dot_quote(u)} -> {_dot_quote(v)}{style};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_PALETTE = {"input": "#cccccc", "output": "#cccccc", "conv": "#8ecae6", "sep": "#90be6d", "pool": "#f9c74f",
            "adaptive_pool": "#f8961e", "norm": "#e9c46a", "act": "#f4a261", "dropout": "#d9d9d9",
            "concat": "#cdb4db", "add": "#ffafcc", "shortcut": "#bde0fe", "linear": "#e76f51",
            "identity": "#eeeeee", "split": "#cdb4db", "gate": "#ffafcc", "scale": "#e9c46a"}


def _colour(op_type: str) -> str:
    return _PALETTE.get(op_type, "#b0b0b0")


@dataclass
class Layout:
    """Node positions (x, -layer) and, for each edge that spans layers, the bends it passes through."""
    pos: dict[str, tuple[float, float]]
    bends: dict[tuple[str, str], list[tuple[float, float]]]


def layout(graph: nx.DiGraph) -> Layout:
    """A Sugiyama-style layered layout: nodes by topological generation (y = -layer); an edge spanning layers
    becomes a chain of virtual nodes, one per layer, so it runs as its own column; within a layer the nodes sit
    at the mean x of their data predecessors, the data path first and bypasses (shortcut, dense and aux edges)
    beside it, at least 1 apart. A residual block reads as a column with its bypass beside it, an Inception
    block as branches side by side."""
    layer = {n: d for d, gen in enumerate(nx.topological_generations(graph)) for n in gen}
    layers: list[list] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    preds: dict = {n: [] for n in graph}  # node -> [(predecessor, edge kind)] in the layered graph
    bypass = {n: bool(graph.in_edges(n)) and all(d.get("kind", "data") != "data"
                                                  for _, _, d in graph.in_edges(n, data=True)) for n in graph}
    for n in graph:
        layers[layer[n]].append(n)
    for u, v, d in graph.edges(data=True):
        kind, prev = d.get("kind", "data"), u
        for depth in range(layer[u] + 1, layer[v]):
            virtual = ("via", u, v, depth)
            layers[depth].append(virtual)
            preds[virtual] = [(prev, kind)]
            bypass[virtual] = kind != "data" or bypass[u]
            prev = virtual
        preds[v].append((prev, kind))
    x: dict = {}
    order = {n: i for i, n in enumerate(graph)}
    for nodes in layers:
        _place(nodes, preds, bypass, x, order)
    pos = {n: (x[n], -layer[n]) for n in graph}
    bends = {(u, v): [(x[("via", u, v, k)], -k) for k in range(layer[u] + 1, layer[v])]
             for u, v in graph.edges if layer[v] - layer[u] > 1}
    return Layout(pos, bends)


def _place(nodes: list, preds: dict, bypass: dict, x: dict, order: dict) -> None:
    """x for one layer: each node wants the mean x of its data predecessors (of all, if it has none); sorted by
    that, data path before bypass, then pushed apart to gaps of at least 1 and shifted back so the data path
    keeps its column."""
    def wanted(n) -> float:
        data = [x[p] for p, kind in preds[n] if kind == "data"] or [x[p] for p, _ in preds[n]]
        return sum(data) / len(data) if data else 0.0

    want = {n: wanted(n) for n in nodes}
    ranked = sorted(nodes, key=lambda n: (want[n], bypass[n], order.get(n, len(order)), str(n)))
    placed: list[float] = []
    for n in ranked:
        placed.append(want[n] if not placed else max(want[n], placed[-1] + 1))
    anchors = [want[n] - p for n, p in zip(ranked, placed) if not bypass[n]] or \
        [want[n] - p for n, p in zip(ranked, placed)]
    shift = sum(anchors) / len(anchors)
    for n, p in zip(ranked, placed):
        x[n] = p + shift


def _hover(n: str, d: dict) -> str:
    def show(v):
        return "x".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    aux = " (aux, training only)" if d.get("aux") else ""
    rows = [f"<b>{_html.escape(str(d['label']))}</b>", f"type: {d['type']}{aux}"]
    if d.get("path"):
        rows.append(f"path: {_html.escape(d['path'])}")
    if d.get("stage"):
        rows.append(f"stage: {_html.escape(str(d['stage']))}")
    for key in ("kernel", "stride", "groups"):
        if d.get(key) is not None:
            rows.append(f"{key}: {show(d[key])}")
    if d.get("in_channels") is not None:
        rows.append(f"channels: {d['in_channels']} -> {d['out_channels']}")
    rows.append(f"shape: {show(d['shape'])}")
    rows.append(f"FLOPs (multiply-adds): {d['flops']:,}")
    rows.append(f"params: {d['params']:,}")
    rows.append(f"acts: {d['acts']:,}")
    return "<br>".join(rows)


def figure(graph: nx.DiGraph):
    """The graph as a layered plotly network: ops coloured by type, sized by FLOPs, hover for each op's cost."""
    import plotly.graph_objects as go  # lazy: plotly is heavy, and only the HTML export needs it

    lay = layout(graph)
    pos = lay.pos
    fig = go.Figure()
    for kind, dash, colour in (("data", "solid", "#888888"), ("shortcut", "dash", "#888888"),
                               ("dense", "dash", "#1f77b4"), ("aux", "dot", "#aaaaaa")):
        xs, ys = [], []
        for u, v, d in graph.edges(data=True):
            if d.get("kind", "data") == kind:
                route = [pos[u], *lay.bends.get((u, v), []), pos[v]]
                xs += [p[0] for p in route] + [None]
                ys += [p[1] for p in route] + [None]
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", name=f"{kind} edge",
                                     line=dict(width=1, dash=dash, color=colour), showlegend=kind != "data"))
    by_type: dict[str, list[str]] = {}
    for n, d in graph.nodes(data=True):
        by_type.setdefault(d["type"], []).append(n)
    for op_type, nodes in by_type.items():
        data = [graph.nodes[n] for n in nodes]
        fig.add_trace(go.Scatter(
            x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes], mode="markers+text", name=op_type,
            text=[d["label"] for d in data], textposition="middle right", textfont=dict(size=9),
            hovertext=[_hover(n, d) for n, d in zip(nodes, data)], hoverinfo="text",
            marker=dict(size=[6 + 2.5 * math.log10(1 + d["flops"]) for d in data], color=_colour(op_type),
                        line=dict(width=1, color="#333333"),
                        symbol=["circle-open" if d.get("aux") else "circle" for d in data])))
    depth = -min((y for _, y in pos.values()), default=0)
    xs = [x for x, _ in pos.values()] + [x for bends in lay.bends.values() for x, _ in bends]
    left, right = min(xs, default=0), max(xs, default=0)
    g = graph.graph
    title = g.get("name", "genotype")
    if "flops" in g:
        title += (f" @ {g.get('resolution')}px: {g['flops'] / 1e9:.3f} GFLOPs (multiply-adds), "
                  f"{g['params'] / 1e6:.2f} M params, {len(graph)} ops")
    fig.update_layout(title=title, template="plotly_white", hovermode="closest", dragmode="pan",
                      height=int(max(600, 28 * depth)), width=int(220 * (right - left + 1.5) + 250),
                      xaxis=dict(visible=False, range=[left - 0.25, right + 1.25]), yaxis=dict(visible=False),
                      legend=dict(title="op type"), margin=dict(l=20, r=20, t=60, b=20))
    return fig


def _html_page(graph: nx.DiGraph) -> str:
    return offline_html(figure(graph), scrollZoom=True)


def offline_html(fig, **config) -> str:
    """A self-contained page: plotly.js inlined, no CDN, works offline."""
    return without_cdn(fig.to_html(include_plotlyjs=True, full_html=True,
                                   config={"displaylogo": False, "responsive": True, **config}))


def without_cdn(page: str) -> str:
    """`page` with plotly.js's one CDN reference, the default topojson URL (used by geo maps, which these
    pages never draw), pointed at a relative folder: the page makes no network reference at all."""
    return re.sub(r"https?://cdn\.plot\.ly/", "./", page)
