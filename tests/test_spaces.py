"""The shipped family spaces: each holds its classics, mostly samples valid genotypes,
samples deterministically and through Optuna, and the union's analytic complexity
equals fvcore's count of the built model on 200 of its draws."""
from __future__ import annotations

import functools
import time

import numpy as np
import optuna
import pytest
import torch
import yaml
from fvcore.nn import FlopCountAnalysis

import space
from space import GenotypeError
from space.named import named
from space.sampling import SPACES_DIR, FixedSource, _first_options, load_space, match, sample, space_names

FAMILIES = ["vanilla", "residual", "resnext", "dense", "inception", "separable", "mobilenet", "metanext"]
SPACES = FAMILIES + ["union"]
MEMBERS = {
    "vanilla": ["vgg16", "vgg19", "alexnet"],
    "residual": ["resnet50", "resnet101", "resnet152"],
    "resnext": ["resnext50_32x4d"],
    "dense": ["densenet121", "densenet169"],
    "inception": ["googlenet", "bn_inception"],
    "separable": ["xception"],
    "mobilenet": ["mobilenet"],
    "metanext": ["inception_next_tiny", "convnext_tiny"],
}
MEMBERS["union"] = [n for family in FAMILIES for n in MEMBERS[family]]
PAIRS = [(s, n) for s in SPACES for n in MEMBERS[s]]
SEEDS = range(200)
BUDGET = 2e9  # the default search budget, in FLOPs

optuna.logging.set_verbosity(optuna.logging.WARNING)


@functools.lru_cache(maxsize=None)
def draws(name: str) -> tuple:
    """(seed, genotype, FLOPs at 224) per seed; genotype and FLOPs None where the draw is invalid."""
    out = []
    for seed in SEEDS:
        try:
            g = sample(load_space(name), seed)
            out.append((seed, g, space.complexity(g, 224).flops))
        except GenotypeError:
            out.append((seed, None, None))
    return tuple(out)


def at_224(name: str):
    return named(name).model_copy(update={"resolution": 224})


# --------------------------------------------------------------------------- the files

def test_every_family_space_is_shipped():
    assert set(SPACES) <= set(space_names())


@pytest.mark.parametrize("name", SPACES)
def test_skeleton_is_valid(name):
    """load_space runs check_space: tied choices agree and the first-option skeleton validates."""
    s = load_space(name)
    assert isinstance(s, dict)
    space.complexity(space.load(_first_options(s)), 224)


def test_union_is_a_choice_of_the_family_spaces():
    doc = yaml.safe_load((SPACES_DIR / "union.yaml").read_text())
    assert doc == {"choice": [{"space": f} for f in FAMILIES], "name": "family", "labels": FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
def test_draws_carry_their_family_at_224(name):
    for _, g, _ in draws(name):
        if g is not None:
            assert (g.family, g.resolution, g.classes) == (name, 224, 1000)


# --------------------------------------------------------------------------- membership

@pytest.mark.parametrize("space_name, genotype", PAIRS, ids=[f"{s}-{n}" for s, n in PAIRS])
def test_classic_is_a_member(space_name, genotype):
    params = match(load_space(space_name), named(genotype))
    assert params is not None, f"{genotype} is not in the {space_name} space"
    drawn = sample(load_space(space_name), FixedSource(params))
    assert space.digest(drawn) == space.digest(at_224(genotype))
    if space_name == "union":
        assert params["family"] == named(genotype).family


def test_residual_space_offers_highway_beside_every_resnet():
    """Highway contains ResNet's solutions: each ResNet in the space has a highway twin, the same
    network with the add gated (one 1x1 gate conv per block on top of ResNet's parameters)."""
    s = load_space("residual")
    params = match(s, named("resnet50"))
    assert params["residual.skip"] == "residual"
    twin = sample(s, FixedSource(params | {"residual.skip": "highway"}))
    assert {b.skip for st in twin.stages for b in st.blocks} == {"highway"}
    assert [len(st.blocks) for st in twin.stages] == [len(st.blocks) for st in named("resnet50").stages]
    assert space.complexity(twin).params > space.complexity(named("resnet50")).params
    assert {g.stages[0].blocks[0].skip for _, g, _ in draws("residual") if g is not None} == {"residual", "highway"}


def test_metanext_mixers_span_identity_depthwise_and_inception():
    """The token mixer is one choice for every block: no mixing, a square depthwise conv, or the Inception split."""
    mixers = {}
    for _, g, _ in draws("metanext"):
        mixer = g.stages[0].blocks[0].branches[0][0]
        kind = ("identity" if mixer.op == "identity" else "inception" if mixer.op == "branches"
                else f"dw{mixer.kernel}")
        assert {b.branches[0][0] for st in g.stages for b in st.blocks if b.skip == "residual"} == {mixer}
        mixers[kind] = mixers.get(kind, 0) + 1
    assert set(mixers) == {"identity", "dw3", "dw5", "dw7", "inception"}, mixers
    inception = match(load_space("metanext"), named("inception_next_tiny"))
    assert (inception["metanext.mixer"], inception["metanext.band"]) == ("inception", 11)
    assert match(load_space("metanext"), named("convnext_tiny"))["metanext.mixer"] == "dw7x7"


@pytest.mark.parametrize("space_name, genotype", PAIRS, ids=[f"{s}-{n}" for s, n in PAIRS])
def test_classic_is_a_member_under_short_names(space_name, genotype):
    params = match(load_space(space_name), named(genotype), short=True)
    assert params is not None and all("[" not in n and not n.startswith("family=") for n in params)
    drawn = sample(load_space(space_name), FixedSource(params), short=True)
    assert space.digest(drawn) == space.digest(at_224(genotype))
    if space_name == "union":
        assert params["arch"] == named(genotype).family


@pytest.mark.parametrize("name", SPACES)
def test_short_names_are_one_to_one_with_path_names(name):
    """The same seed draws the same genotype under either naming; each path name has one short name and back."""
    import random

    from space.sampling import RandomSource
    short_of: dict[str, str] = {}
    for seed in range(300):
        long_src, short_src = RandomSource(random.Random(seed)), RandomSource(random.Random(seed))
        try:
            a = sample(load_space(name), long_src)
        except GenotypeError:
            a = None
        try:
            b = sample(load_space(name), short_src, short=True)
        except GenotypeError:
            b = None
        assert (a is None) == (b is None) and (a is None or space.digest(a) == space.digest(b))
        assert list(long_src.params.values()) == list(short_src.params.values())
        for long, short in zip(long_src.params, short_src.params):
            assert short_of.setdefault(long, short) == short
    assert len(set(short_of.values())) == len(short_of)
    if name == "union":
        assert min(short_of.values()) == "arch"  # sorts first: optuna-dashboard's default slice parameter


# --------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("name", SPACES)
def test_mostly_valid(name):
    ok = [g for _, g, _ in draws(name) if g is not None]
    flops = np.array([f for *_, f in draws(name) if f is not None]) / 1e9
    q = np.quantile(flops, [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1])
    print(f"\n{name}: {len(ok)}/{len(SEEDS)} valid; GFLOPs q0/10/25/50/75/90/100 "
          + " ".join(f"{v:.2f}" for v in q) + f"; <= 2 GFLOPs {np.mean(flops <= 2):.0%}")
    assert len(ok) >= 0.8 * len(SEEDS)


def test_union_flops_straddle_the_budget():
    flops = np.array([f for *_, f in draws("union") if f is not None])
    under = np.mean(flops <= BUDGET)
    q = np.quantile(flops / 1e9, [0, 0.05, 0.25, 0.5, 0.75, 0.95, 1])
    print("\nunion GFLOPs q0/5/25/50/75/95/100: " + " ".join(f"{v:.2f}" for v in q) + f"; <= 2 GFLOPs {under:.0%}")
    assert 0.25 <= under <= 0.75, f"{under:.0%} of the union's draws fit a 2 GFLOP budget"
    assert flops.min() <= 0.1e9 and flops.max() >= 10e9  # roughly 0.05 - 20 GFLOPs
    assert flops.max() <= 60e9
    families = {g.family for _, g, _ in draws("union") if g is not None}
    assert families == set(FAMILIES)


@pytest.mark.parametrize("name", SPACES)
def test_sampling_is_deterministic(name):
    digests = []
    for seed, g, _ in draws(name)[:20]:
        try:
            again = sample(load_space(name), seed)
        except GenotypeError:
            assert g is None
            continue
        assert g is not None and space.digest(again) == space.digest(g)
        digests.append(space.digest(g))
    assert len(set(digests)) > len(digests) // 2  # and different seeds give different nets


# --------------------------------------------------------------------------- Optuna

def _study():
    return optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=0))


@pytest.mark.parametrize("name", SPACES)
def test_optuna_trials_sample(name):
    s, study, valid = load_space(name), _study(), 0
    for i in range(20):
        t = study.ask()
        try:
            g = sample(s, t)
            flops = space.complexity(g, 224).flops
        except GenotypeError:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
            continue
        valid += 1
        study.tell(t, [float(i % 7), flops / 1e9])
    assert valid >= 12


@pytest.mark.parametrize("space_name, genotype", PAIRS, ids=[f"{s}-{n}" for s, n in PAIRS])
def test_enqueued_match_reproduces_the_classic(space_name, genotype):
    s, study = load_space(space_name), _study()
    params = match(s, named(genotype))
    study.enqueue_trial(params)
    t = study.ask()
    assert space.digest(sample(s, t)) == space.digest(at_224(genotype))
    study.tell(t, [0.0, 1.0])


# --------------------------------------------------------------------------- exact complexity

def union_at_32(n: int = 200):
    """The first n union draws valid at both 224 and 32 (AlexNet-shaped nets vanish at 32)."""
    s, seed = load_space("union"), 0
    while n:
        try:
            g = sample(s, seed)
            space.complexity(g, 224)
            yield seed, g, space.complexity(g, 32, breakdown=False)
            n -= 1
        except GenotypeError:
            pass
        seed += 1
        assert seed < 2000, "too few union draws are valid at 32x32"


def test_analytic_complexity_equals_fvcore_on_200_union_draws():
    """Built on the meta device and materialised without init (fast); params by numel,
    FLOPs by fvcore. One intra-op thread: on a small shared CPU, OpenMP threads that
    compete with other processes make these tiny forwards hundreds of times slower."""
    threads, start, bad, families = torch.get_num_threads(), time.time(), [], {}
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for seed, g, c in union_at_32():
                with torch.device("meta"):
                    m = space.build(g, resolution=32)
                m = m.to_empty(device="cpu").eval()
                params = sum(p.numel() for p in m.parameters())
                flops = (FlopCountAnalysis(m, torch.zeros(1, 3, 32, 32))
                         .unsupported_ops_warnings(False).uncalled_modules_warnings(False).total())
                families[g.family] = families.get(g.family, 0) + 1
                if (c.flops, c.params) != (flops, params):
                    bad.append(f"seed {seed}: analytic {c.flops:,} FLOPs {c.params:,} params, "
                               f"fvcore {flops:,} FLOPs, built {params:,} params\n{space.to_yaml(g)}")
    finally:
        torch.set_num_threads(threads)
    print(f"\n200 union draws at 32x32 in {time.time() - start:.0f}s: {families}")
    assert sum(families.values()) == 200
    assert not bad, "\n".join(bad)
