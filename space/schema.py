"""The genotype grammar: stem -> stages -> head, every design axis a field.

A genotype is a document (YAML, JSON or the equivalent Python dicts). These
pydantic models validate it on load; `dump` gives its canonical form (schema
order, defaults omitted, square kernels as one int) so equal genotypes
serialise, hash and compare identically.

Ops are the leaves. Blocks hold parallel branches of ops, merged by concat or
sum, optionally followed by `post` ops and wrapped in a residual (add), highway
(gated add) or dense (concat) skip. Branches may each take their own slice of
the input channels (`split`, as in InceptionNeXt's token mixer). A block's
`repeat` is its depth; strides in its ops apply to its first repetition only,
as in every staged CNN.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from .document import check_tree, parse_text
from .errors import GenotypeError, join

ACTIVATIONS = ("relu", "relu6", "silu", "gelu", "hardswish")
NORMS = ("batch", "layer", "none")  # layer: LayerNorm over the channels of each position


class FieldError(ValueError):
    """A check that spans several fields but blames one: the error's path ends in `field`."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field


# Every numeric field's valid range, by field name (the same name means the same thing in every op):
# (low, high, what it counts). Ranges are inclusive; `out` as a float is a fraction, checked by Conv.
MAX_CHANNELS = 65536
RANGES = {
    "out": (1, MAX_CHANNELS, "channels"), "groups": (1, MAX_CHANNELS, "groups"),
    "hidden": (1, MAX_CHANNELS, "units"), "kernel": (1, 63, "pixels"), "stride": (1, 32, "pixels"),
    "padding": (0, 63, "pixels"), "output": (1, 64, "pixels"), "size": (1, 64, "pixels"),
    "repeat": (1, 1000, "repetitions"), "resolution": (1, 8192, "pixels"), "classes": (1, 100_000, "classes"),
    "width": (1e-3, 16, "a multiplier"), "norm_eps": (1e-12, 1, "an epsilon"), "scale": (1e-6, 16, "a factor"),
    "p": (0, 0.999, "a probability"), "dropout": (0, 0.999, "a probability"),
    "layer_scale": (1e-9, 16, "a factor"), "split": (1, MAX_CHANNELS, "channels, or fractions summing to 1"),
}
OWN_CHECKS = {"split"}  # checked against the input channels by the field's own validator; finite here


def check_range(name: str, value: Any) -> None:
    """Raise a GenotypeError naming `name` if a numeric value is non-finite or outside RANGES[name]."""
    for v in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise GenotypeError(name, f"{v} is not a finite number")
        if name not in RANGES or name in OWN_CHECKS or (name == "out" and isinstance(v, float)):
            continue
        lo, hi, what = RANGES[name]
        if not lo <= v <= hi:
            raise GenotypeError(name, f"{v} is out of range; {name} is {lo:g} to {hi:g} ({what})")


def _refuse_bools(path: str, value: Any) -> None:
    """A number field's value, or any element of its lists at any depth, must not be a yes/no."""
    if isinstance(value, bool):
        raise GenotypeError(path, f"expected a number, got {str(value).lower()}; yes/no are not numbers")
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _refuse_bools(join(path, i), v)


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __hash__(self) -> int:
        return hash(canonical_json(self))

    @model_validator(mode="before")
    @classmethod
    def _no_bools(cls, data):
        """YAML reads yes/no/on/off as booleans, which pydantic would take as 1 and 0 in a number field."""
        if isinstance(data, dict):
            for name in RANGES.keys() & data.keys():
                _refuse_bools(name, data[name])
        return data

    @model_validator(mode="after")
    def _ranges(self):
        for name in type(self).model_fields:
            check_range(name, getattr(self, name))
        return self


def _pair(value: Any, what: str) -> Any:
    """Accept n or [h, w]; store a square pair as one int (canonical form)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{_show(list(value))} must be one int or [height, width]")
        value = tuple(value)
        if value[0] == value[1]:
            return value[0]
    return value


def _positive_kernel(value: Any) -> Any:
    for k in value if isinstance(value, tuple) else (value,):
        if k < 1:
            raise ValueError(f"{k} must be at least 1")
    return value


def _odd_or_patchify(spec):
    """Kernels are odd, so that symmetric padding keeps the size; an even kernel is legal only as a
    patchify conv (ConvNeXt's stem and downsampling): square, stride equal to the kernel, padding 0."""
    for k in spec.kernel if isinstance(spec.kernel, tuple) else (spec.kernel,):
        if k % 2 == 0 and not (isinstance(spec.kernel, int) and spec.stride == k and spec.padding == 0):
            raise FieldError("kernel", f"{k} is even; kernels must be odd, except a square patchify kernel "
                             f"with stride {k} and padding 0")
    return spec


Kernel = Union[int, tuple[int, int]]


def _default_padding(spec):
    """Padding spelled out as its default (kernel // 2) is stored as the default, so it hashes the same."""
    if spec.padding is not None:
        kh, kw = spec.kernel if isinstance(spec.kernel, tuple) else (spec.kernel, spec.kernel)
        ph, pw = spec.padding if isinstance(spec.padding, tuple) else (spec.padding, spec.padding)
        if (ph, pw) == (kh // 2, kw // 2):
            object.__setattr__(spec, "padding", None)
    return spec


def _check_order(order: str, letters: str, need: str) -> str:
    if sorted(order) != sorted(set(order)) or not set(order) <= set(letters) or need not in order:
        raise ValueError(
            f"{_show(order)} must arrange the letters {', '.join(letters)} at most once each and include '{need}' "
            "(c = conv, n = norm, a = activation; e.g. 'cna' post-activation, 'nac' pre-activation)")
    return order


class _Windowed(Spec):
    """The checks shared by the ops that slide a conv kernel with symmetric padding (conv, sep)."""
    _pairs = field_validator("kernel", "padding", mode="before", check_fields=False)(lambda v: _pair(v, "kernel"))
    _kernel_size = field_validator("kernel", check_fields=False)(lambda v: _positive_kernel(v))
    _order = field_validator("order", check_fields=False)(lambda v: _check_order(v, "cna", "c"))
    _same = model_validator(mode="after")(lambda self: _default_padding(_odd_or_patchify(self)))


class Conv(_Windowed):
    """A convolution with its norm and activation, in the order `order` gives."""
    op: Literal["conv"]
    out: Union[int, float] = Field(description="channels (int) or a fraction of the input channels (float)")
    kernel: Kernel = 3
    stride: int = Field(1, ge=1)
    padding: Union[int, tuple[int, int], None] = None  # None: kernel // 2 on each side
    groups: Union[int, Literal["depthwise"]] = 1  # depthwise: one group per input channel
    order: str = "cna"
    bias: bool | None = None  # None: a bias only where no norm follows; true/false: always/never

    @field_validator("out")
    @classmethod
    def _positive(cls, v):
        if isinstance(v, bool) or v <= 0:
            raise ValueError(f"{v} must be a positive channel count or fraction")
        if isinstance(v, float) and v > 8:
            raise ValueError(f"{v} is a fraction of the input channels and must be at most 8; "
                             "write an int for a channel count")
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v):
        if isinstance(v, int) and not isinstance(v, bool):
            try:
                check_range("groups", v)  # the generic check can't see through the 'depthwise' union
            except GenotypeError as e:
                raise ValueError(e.reason) from None  # pydantic's location already ends in groups
        return v


class Sep(_Windowed):
    """Depthwise-separable conv: depthwise k x k then pointwise 1 x 1.

    `mid` lists what sits between the two: '' as in Xception, 'na' as in MobileNet.
    """
    op: Literal["sep"]
    out: int = Field(ge=1)
    kernel: Kernel = 3
    stride: int = Field(1, ge=1)
    padding: Union[int, tuple[int, int], None] = None
    order: str = "cna"
    mid: str = ""
    bias: bool | None = None

    @field_validator("mid")
    @classmethod
    def _mid(cls, v):
        if v not in ("", "n", "a", "na", "an"):
            raise ValueError(f"{_show(v)} must be one of '', 'n', 'a', 'na', 'an' "
                             "(norm/activation between depthwise and pointwise)")
        return v


class Pool(Spec):
    op: Literal["pool"]
    type: Literal["max", "avg"] = "max"
    kernel: int = Field(3, ge=1)
    stride: int = Field(1, ge=1)
    padding: int | None = Field(None, ge=0)  # None: (kernel - 1) // 2
    ceil: bool = False
    count_include_pad: bool = True

    @model_validator(mode="after")
    def _padding_fits(self):
        if self.padding is not None and self.padding > self.kernel // 2:
            raise GenotypeError("padding", f"{self.padding} must be at most half the kernel ({self.kernel})")
        if self.padding == (self.kernel - 1) // 2:
            object.__setattr__(self, "padding", None)  # the default, spelled out
        return self


class AdaptivePool(Spec):
    """Pool to a fixed output size, whatever the input size (GoogLeNet's aux head)."""
    op: Literal["adaptive_pool"]
    type: Literal["max", "avg"] = "avg"
    output: int = Field(1, ge=1)


class Norm(Spec):
    op: Literal["norm"]


class Identity(Spec):
    """The input, unchanged: InceptionNeXt's untouched channel group, or a block that only skips."""
    op: Literal["identity"]


class Act(Spec):
    op: Literal["act"]


class Dropout(Spec):
    op: Literal["dropout"]
    p: float = Field(ge=0, lt=1)


Split = list[Union[int, float]]


class Branches(Spec):
    """Parallel branches inside a branch (Inception v3's split 1x3 / 3x1 heads)."""
    op: Literal["branches"]
    split: Split | None = None  # each branch's slice of the input channels; None: every branch sees them all
    branches: list[list["Op"]] = Field(min_length=1)
    merge: Literal["concat", "sum"] = "concat"

    _nonempty = field_validator("branches")(lambda v: _nonempty_branches(v))
    _split = model_validator(mode="after")(lambda self: _check_split(self))


def _nonempty_branches(branches):
    for i, branch in enumerate(branches):
        if not branch:
            raise ValueError(f"branch {i} is empty; a branch needs at least one op")
    return branches


def _check_split(spec):
    """`split` gives each branch its slice of the input channels: all channel counts (which must sum to the
    input channels, checked against the shape), or all fractions summing to 1 (each branch after the
    first takes int(channels x fraction), the first takes the rest, as timm's InceptionNeXt rounds)."""
    split = spec.split
    if split is None:
        return spec
    if len(split) != len(spec.branches):
        raise FieldError("split", f"gives {len(split)} slices for {len(spec.branches)} branches; give one per branch")
    kinds = {type(v) for v in split}
    for v in split:
        if v <= 0 or (isinstance(v, float) and v >= 1):
            raise FieldError("split", f"{v} is neither a channel count (an int, at least 1) nor a fraction "
                             "(a float between 0 and 1)")
    if len(kinds) > 1:
        raise FieldError("split", f"{split} mixes channel counts and fractions; use all ints or all floats")
    if float in kinds and abs(sum(split) - 1) > 1e-6:
        raise FieldError("split", f"the fractions {split} sum to {sum(split):g}, not 1")
    return spec


OP_TYPES = {cls.model_fields["op"].annotation.__args__[0]: cls
            for cls in (Conv, Sep, Pool, AdaptivePool, Norm, Identity, Act, Dropout, Branches)}


def _op_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        tag = value.get("op")
    else:
        tag = getattr(value, "op", None)
    return f"op={tag}" if isinstance(tag, str) and tag in OP_TYPES else None


Op = Annotated[Union[tuple(Annotated[cls, Tag(f"op={name}")] for name, cls in OP_TYPES.items())],
               Discriminator(_op_tag)]
Branches.model_rebuild()


class Head(Spec):
    """ops -> adaptive pool to size x size -> flatten -> hidden FC stack -> classifier.

    Dropout sits before the classifier and after each hidden layer's activation,
    and `norm: layer` puts a LayerNorm between the two (timm's MlpClassifierHead).
    `pool: none` flattens whatever the ops leave (for heads that pool in `ops`).
    """
    ops: list[Op] = []
    pool: Literal["avg", "max", "none"] = "avg"
    size: int = Field(1, ge=1)
    hidden: list[Annotated[int, Field(ge=1)]] = []
    norm: Literal["none", "layer"] = "none"
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _norm_needs_hidden(self):
        if self.norm != "none" and not self.hidden:
            raise FieldError("norm", "normalises the hidden layers' outputs, and there are none; add hidden or drop it")
        return self


class Block(Spec):
    repeat: int = Field(1, ge=1, description="depth: how many times the block is stacked")
    split: Split | None = None  # each branch's slice of the input channels, as in Branches
    branches: list[list[Op]] = Field(min_length=1)
    merge: Literal["concat", "sum"] = "concat"
    post: list[Op] = []
    skip: Literal["none", "residual", "highway", "dense"] = "none"
    shortcut: Literal["conv-norm", "conv", "pad"] = "conv-norm"  # residual/highway shortcut when shapes differ
    scale: float = Field(1.0, gt=0)  # residual scale (Inception-ResNet: 0.1-0.3)
    layer_scale: float | None = Field(None, gt=0)  # a learnt per-channel branch scale, initialised to this
    act: bool = False  # activation after merge / residual add (post-activation)
    aux: Head | None = None  # auxiliary classifier on this block's output (training only)

    _nonempty = field_validator("branches")(lambda v: _nonempty_branches(v))
    _split = model_validator(mode="after")(lambda self: _check_split(self))

    @model_validator(mode="after")
    def _patchify_once(self):
        """Strides apply to the first repetition only, so a repeated patchify conv runs its even kernel at
        stride 1 after the first: the even-kernel case refused everywhere else."""
        if self.repeat > 1:
            for path, op in _repeated_ops(self):
                kernel = op.kernel if isinstance(op, _Windowed) else 1  # a pool's even window is its own case
                if isinstance(kernel, int) and kernel % 2 == 0:
                    raise GenotypeError(join(path, "kernel"), f"{kernel} is an even (patchify) kernel in a block "
                                        f"with repeat {self.repeat}, which runs it again at stride 1; put it in a "
                                        "block of its own with repeat 1")
        return self

    @model_validator(mode="after")
    def _skip_fields(self):
        if self.skip not in ("residual", "highway"):
            if self.scale != 1.0:
                raise FieldError("scale", "is a residual scale; set skip: residual (or highway) or drop it")
            if self.layer_scale is not None:
                raise FieldError("layer_scale", "scales a residual branch; set skip: residual (or highway) or drop it")
            if "shortcut" in self.model_fields_set:
                raise FieldError("shortcut", f"is the projection of a residual or highway skip, and this block's skip "
                                 f"is {self.skip}; drop it")
        return self


def _repeated_ops(block: Block):
    """(path, op) for every op that each repetition of a block runs, nested branches included."""
    todo = [(join(join("branches", i), j), op)
            for i, branch in enumerate(block.branches) for j, op in enumerate(branch)]
    todo += [(join("post", j), op) for j, op in enumerate(block.post)]
    while todo:
        path, op = todo.pop(0)
        yield path, op
        if isinstance(op, Branches):
            todo += [(join(join(join(path, "branches"), i), j), inner)
                     for i, branch in enumerate(op.branches) for j, inner in enumerate(branch)]


class Stage(Spec):
    name: str | None = None
    blocks: list[Block] = Field(min_length=1)


class Genotype(Spec):
    name: str | None = None
    family: str | None = None
    resolution: int = Field(224, ge=1, description="canonical input resolution")
    classes: int = Field(1000, ge=1, description="canonical number of classes (10 for the CIFAR nets)")
    width: float = Field(1.0, gt=0, description="width multiplier, as in MobileNet")
    norm: Literal[NORMS] = "batch"
    norm_eps: float = Field(1e-5, gt=0)
    act: Literal[ACTIVATIONS] = "relu"
    stem: list[Op] = []
    stages: list[Stage] = Field(min_length=1)
    head: Head = Head()


# --------------------------------------------------------------------------- documents

def load(doc: Any, path: str = "") -> Genotype:
    """Validate a genotype document (dict, YAML/JSON text) into a Genotype."""
    if isinstance(doc, Genotype):
        return doc
    if isinstance(doc, str):
        doc = parse_text(doc)  # checks the tree as it reads it
    elif isinstance(doc, dict):
        check_tree(doc, path)
    if not isinstance(doc, dict):
        raise GenotypeError(path, f"a genotype is a mapping with stem, stages and head, not {_kind(doc)}")
    try:
        return Genotype.model_validate(doc)
    except ValidationError as e:
        raise _first_error(e).within(path) from None


def dump(g: Genotype) -> dict:
    """The canonical document: schema order, defaults omitted."""
    return g.model_dump(mode="json", exclude_defaults=True)


def canonical_json(g: Spec) -> str:
    return json.dumps(g.model_dump(mode="json", exclude_defaults=True), separators=(",", ":"))


def digest(g: Genotype) -> str:
    """A stable short hash of the architecture: the canonical form less its `name` label."""
    doc = g.model_dump(mode="json", exclude_defaults=True, exclude={"name"})
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()[:16]


def to_yaml(g: Genotype) -> str:
    return yaml.dump(dump(g), sort_keys=False, default_flow_style=None, width=100)


_TYPE_NAMES = {"int", "float", "bool", "str", "none"}


def _first_error(e: ValidationError) -> GenotypeError:
    err = e.errors(include_url=False)[0]
    path = ""
    for key in err["loc"]:
        if isinstance(key, str) and (key.startswith("op=") or key in _TYPE_NAMES or "[" in key):
            continue  # a union member pydantic names in the location, not a field
        path = join(path, key)
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        field = path.rsplit(".", 1)[-1]
        model = _model_at(err["loc"][:-1])
        near = difflib.get_close_matches(field, list(model.model_fields) if model else [], n=1)
        hint = f"did you mean '{near[0]}'?" if near else (
            f"known fields: {', '.join(model.model_fields)}" if model else "remove it")
        return GenotypeError(path, f"unknown field; {hint}")
    if kind == "missing":
        return GenotypeError(path, "required field is missing")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        got = err["input"].get("op") if isinstance(err["input"], dict) else None
        known = ", ".join(OP_TYPES)
        if got is None:
            return GenotypeError(path, f"an op needs 'op:' naming its type, one of {known}")
        near = difflib.get_close_matches(str(got), list(OP_TYPES), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return GenotypeError(join(path, "op"), f"unknown op {_show(got)}{hint}; known ops: {known}")
    if kind in ("value_error", "assertion_error") and isinstance(ctx.get("error"), FieldError):
        return GenotypeError(join(path, ctx["error"].field), str(ctx["error"]))
    if kind in ("value_error", "assertion_error") and isinstance(ctx.get("error"), GenotypeError):
        inner = ctx["error"]  # raised by a model validator, naming the field it is about
        return inner.within(path)  # not join: a nested op's path is longer than one key
    if kind in ("value_error", "assertion_error"):
        return GenotypeError(path, str(ctx.get("error", "invalid value")))
    if kind in _BOUNDS:
        field = next((k for k in reversed(err["loc"]) if isinstance(k, str) and k in RANGES), None)
        if field:
            lo, hi, what = RANGES[field]
            return GenotypeError(path, f"{_show(err['input'])} is out of range; {field} is {lo:g} to {hi:g} ({what})")
        return GenotypeError(path, f"{_show(err['input'])} must be {_BOUNDS[kind]} {ctx.get(_BOUND_KEYS[kind])}")
    if kind == "literal_error":
        return GenotypeError(path, f"{_show(err['input'])} is not allowed; expected {ctx.get('expected')}")
    if kind == "too_short":
        n = ctx.get("min_length", 1)
        return GenotypeError(path, f"is empty; it needs at least {n} item{'s' if n != 1 else ''}")
    if kind == "too_long":
        return GenotypeError(path, f"has too many items; at most {ctx.get('max_length')}")
    expected = next((words for kinds, words in _EXPECTED if kind in kinds), "a value of the grammar's type")
    return GenotypeError(path, f"expected {expected}, got {_got(err['input'])}")


# pydantic's error kinds, said in the project's own words (its own wording never reaches the user)
_BOUNDS = {"greater_than": "greater than", "greater_than_equal": "at least", "less_than": "less than",
           "less_than_equal": "at most"}
_BOUND_KEYS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}
_EXPECTED = (
    (("int_type", "int_parsing", "int_from_float", "int_parsing_size"), "a whole number"),
    (("float_type", "float_parsing", "finite_number"), "a number"),
    (("bool_type", "bool_parsing"), "true or false"),
    (("string_type", "string_unicode"), "text"),
    (("list_type", "tuple_type", "iterable_type"), "a list"),
    (("dict_type", "model_type", "model_attributes_type"), "a mapping (field: value)"),
    (("none_required",), "nothing (null)"),
)


def _kind(value: Any) -> str:
    """A value's type in the document's terms (YAML/JSON), not Python's."""
    if value is None:
        return "null"
    for types, word in ((bool, "true/false"), (int, "a whole number"), (float, "a number"), (str, "text"),
                        ((list, tuple), "a list"), (dict, "a mapping")):
        if isinstance(value, types):
            return word
    return type(value).__name__


def _got(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)) or value is None:
        return _kind(value)
    return f"{_show(value)} ({_kind(value)})"


def _show(value: Any) -> str:
    """A short rendering of an offending value for a one-line message."""
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None), list)) else _kind(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _model_at(loc) -> type[BaseModel] | None:
    """The model class that a pydantic error location points into."""
    model: Any = Genotype
    for key in loc:
        if isinstance(key, int):
            continue
        if key.startswith("op="):
            model = OP_TYPES[key[3:]]
            continue
        field = model.model_fields.get(key) if isinstance(model, type) else None
        if field is None:
            return None
        model = {"stages": Stage, "blocks": Block, "head": Head, "aux": Head}.get(key, model)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None
