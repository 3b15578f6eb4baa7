"Intervals and paired comparisons of `robustml.stats`, cross-checked against SciPy and the closed forms."
import math

import numpy as np
import pytest
import torch
from scipy import stats as st

from robustml.stats import (Trajectory, binomial_p, bootstrap_ci, bootstrap_metric, mean_ci, nadeau_bengio_ci,
                            not_worse, paired_counts, percent, time_to_target, wilson_ci)


def test_bootstrap_ci_binary_matches_normal_width():
    c = np.r_[np.ones(700), np.zeros(300)]
    lo, hi = bootstrap_ci(c, n=2000)
    # the percentile interval of a proportion at n=1000 is close to the normal one; 2,000 resamples estimate its
    # quantiles to a few percent, so 15% is a comfortable tolerance
    assert lo < 0.7 < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.21 / 1000), rel=0.15)
    assert bootstrap_ci(c) == bootstrap_ci(torch.from_numpy(c).bool())   # deterministic for a seed, accepts tensors
    lo2, hi2 = bootstrap_ci(np.r_[np.ones(70), np.zeros(30)])
    assert hi2 - lo2 > hi - lo                                           # fewer examples, wider


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    x = np.random.default_rng(0).normal(0.5, 0.3, 200)
    lo, hi = bootstrap_ci(x, n=20000, seed=1)
    ref = st.bootstrap((x,), np.mean, n_resamples=20000, method='percentile', random_state=2).confidence_interval
    # two Monte-Carlo estimates of the same quantiles: their difference is a small fraction of the interval's width
    assert abs(lo - ref.low) < 0.05 * (hi - lo) and abs(hi - ref.high) < 0.05 * (hi - lo)


def test_bootstrap_bad_input():
    for bad, msg in [([], 'empty'), ([1., float('nan')], 'NaN')]:
        with pytest.raises(ValueError, match=msg): bootstrap_ci(bad)
    with pytest.raises(ValueError, match='alpha'): bootstrap_ci([1, 0], alpha=1.5)
    with pytest.raises(ValueError, match='length'): bootstrap_metric([0, 1], [0], lambda a, b: 0.)


def test_bootstrap_metric_contains_the_value():
    y = np.arange(300) % 3; p = np.where(np.arange(300) < 240, y, (y + 1) % 3)
    lo, hi = bootstrap_metric(y, p, lambda a, b: float((a == b).mean()))
    assert lo < 0.8 < hi


@pytest.mark.parametrize('k,n', [(0, 5), (3, 10), (42, 44), (209, 319), (50, 50)])
def test_wilson_matches_closed_form(k, n):
    z = st.norm.ppf(0.975); p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_ci(k, n) == pytest.approx((max(0., c - h), min(1., c + h)), abs=1e-9)


def test_counts_bad_input():
    for k, n in [(5, 4), (-1, 3), (0, 0)]:
        with pytest.raises(ValueError): wilson_ci(k, n)
        with pytest.raises(ValueError): binomial_p(k, n)
    assert binomial_p(5, 10) == 1.0 and binomial_p(0, 20) < 1e-5


def test_mean_ci_matches_scipy_t_interval():
    a = np.random.default_rng(3).normal(size=12)
    m, lo, hi = mean_ci(a, 0.9)
    ref = st.t.interval(0.9, len(a) - 1, loc=a.mean(), scale=st.sem(a))
    assert m == pytest.approx(a.mean()) and (lo, hi) == pytest.approx(ref)


def test_nadeau_bengio_widens_the_t_interval():
    scores = np.random.default_rng(4).normal(0.7, 0.02, 10)
    m, lo, hi = nadeau_bengio_ci(scores, n_train=900, n_test=100)
    _, tlo, thi = mean_ci(scores)
    assert (hi - lo) / (thi - tlo) == pytest.approx(math.sqrt(1 + 10 * 100 / 900))
    with pytest.raises(ValueError, match='two folds'): nadeau_bengio_ci([0.5], 9, 1)
    with pytest.raises(ValueError, match='positive'): nadeau_bengio_ci([0.5, 0.6], 0, 1)


def test_paired_comparisons():
    a = np.array([1, 1, 1, 0, 0]); b = np.array([1, 0, 0, 1, 0])
    assert paired_counts(a, b) == (2, 1)
    assert paired_counts(torch.tensor(a).bool(), torch.tensor(b).bool()) == (2, 1)
    assert not_worse(a, b) and not_worse(b, a)
    assert not not_worse(np.ones(50), np.zeros(50))          # 50 discordant, all one way: 50 > 3 * sqrt(50)
    with pytest.raises(ValueError, match='paired'): paired_counts(a, b[:3])
    with pytest.raises(ValueError, match='booleans'): paired_counts(a * 2, b)


def test_percent():
    assert percent(0.5) == 50.0 and percent((0.1234, 0.5)) == (12.34, 50.0) and percent(None) is None


def test_trajectory_and_time_to_target():
    a = Trajectory([{'train_s': 10, 'acc': 50}, {'train_s': 20, 'acc': 70}])
    b = Trajectory([{'train_s': 15, 'acc': 60}, {'train_s': 30, 'acc': 65}])
    assert time_to_target(a, b, acc=60)['ratio'] == pytest.approx(20 / 15)
    assert time_to_target(a, b, acc=70)['bound'] == ('<', pytest.approx(20 / 30))
    assert time_to_target(b, a, acc=70)['bound'] == ('>', pytest.approx(30 / 20))
    r = time_to_target(a, b, acc=99)
    assert r['a_s'] is None and r['b_s'] is None and r['ratio'] is None and r['bound'] is None
    with pytest.raises(ValueError, match='decrease'): Trajectory([{'train_s': 2}, {'train_s': 1}])
