"""Top-k fidelity metrics and their bootstrap intervals, on cases computed by hand."""
import pytest

from explorer.analysis import topk
from explorer.base.dominance import nondominated_ranks, sorted_by_fronts

TRUTH = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
PRED = [0.5, 0.9, 0.8, 0.4, 0.3, 0.2]  # ranks the truly best genotype third, the rest in order


def test_overall_tau_counts_the_two_discordant_pairs():
    assert topk.kendall(PRED, TRUTH) == pytest.approx(11 / 15)


def test_tau_within_the_truths_top_half():
    # top half by truth: genotypes 0, 1, 2; of their 3 pairs, (0,1) and (0,2) are discordant
    assert topk.tau_top_half(PRED, TRUTH) == pytest.approx(-1 / 3)


def test_precision_at_k():
    assert topk.precision_at(2)(PRED, TRUTH) == 0.5   # {1, 2} against {0, 1}
    assert topk.precision_at(3)(PRED, TRUTH) == 1.0   # {0, 1, 2} both ways
    assert topk.precision_at(10)(PRED, TRUTH) == 1.0  # k beyond the genotypes: all of them


def test_best_rank_of_the_proxys_top_k():
    assert topk.br_at(1)(PRED, TRUTH) == 2  # the proxy's pick is the truth's second
    assert topk.br_at(3)(PRED, TRUTH) == 1


def test_regret_is_the_truth_lost_by_the_proxys_pick():
    assert topk.regret(PRED, TRUTH) == pytest.approx(0.1)
    assert topk.regret(TRUTH, TRUTH) == 0


def test_a_perfect_proxy_has_degenerate_intervals():
    out = topk.report(TRUTH, TRUTH, resamples=200)
    assert out["tau"]["low"] == out["tau"]["high"] == 1.0
    assert out["regret"]["low"] == out["regret"]["high"] == 0.0


def test_intervals_bracket_the_value_and_skip_missing_pairs():
    out = topk.report(PRED + [None], TRUTH + [0.95], resamples=300)
    assert all(row["n"] == 6 for row in out.values())
    for name in ("tau", "regret", "BR@5"):
        row = out[name]
        assert row["low"] <= row["value"] <= row["high"], name
    assert out["regret"]["high"] > 0  # resamples that keep genotype 0 lose 0.1


def test_only_metrics_that_can_tell_proxies_apart_are_shown():
    """At n genotypes precision@k and BR@k with k >= n are 1 whatever the proxy: not shown."""
    assert topk.telling(6) == ["tau_top_half", "precision@5", "BR@5", "regret"]
    assert topk.telling(11) == ["tau_top_half", "precision@5", "precision@10", "BR@5", "regret"]
    assert topk.telling(3) == ["tau_top_half", "regret"]
    assert topk.shown({"value": 0.4286, "low": -0.5294, "high": 1.0, "n": 14}) == "0.429 [-0.529, 1]"
    assert topk.shown({"value": None, "low": None, "high": None, "n": 1}) == "n/a"


def test_nondominated_sorting_peels_fronts():
    # (accuracy, cost): 0 and 1 are non-dominated; 2 is dominated by 1 only; 3 by everything
    pts = [(0.9, 10.0), (0.8, 5.0), (0.7, 6.0), (0.6, 20.0)]
    assert nondominated_ranks(pts) == [0, 0, 1, 2]
    assert sorted_by_fronts(pts) == [0, 1, 2, 3]
    assert nondominated_ranks([(0.5, 1.0), (0.5, 1.0)]) == [0, 0]  # equal points don't dominate each other
