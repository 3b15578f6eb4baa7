"Randomized smoothing (robustml.certify) and chapter 1's certification study, checked against independent computations."
import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import binomtest, norm

from robustml.certify import certified_accuracy, certify, lower_bound, noise_counts


@pytest.mark.parametrize('k,n,alpha', [(1, 10, 0.05), (57, 100, 0.001), (990, 1000, 0.001), (10, 10, 0.01)])
def test_lower_bound_is_scipys_exact_interval(k, n, alpha):
    "The one-sided Clopper-Pearson bound at alpha is the low end of SciPy's exact two-sided interval at 2 alpha."
    want = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method='exact').low
    assert lower_bound(k, n, alpha) == pytest.approx(want, rel=1e-9, abs=1e-12)


def _linear(w, b):
    m = nn.Linear(len(w), 2)
    with torch.no_grad(): m.weight.copy_(torch.stack([-w, w]) / 2); m.bias.copy_(torch.tensor([-b, b]) / 2)
    return m


def test_certificates_are_sound_for_a_linear_classifier():
    "A linear rule's exact L2 margin bounds every certified radius (alpha = 1e-9: a false certificate is negligible)."
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(8, generator=g), 0.2
    x = torch.randn(60, 8, generator=g)
    pred, rad = certify(_linear(w, b), x, sigma=0.4, n0=50, n=3000, alpha=1e-9, batch_size=1000, seed=2)
    margin = (x @ w + b).abs() / w.norm()
    truth = (x @ w + b > 0).long()
    cert = pred >= 0
    assert cert.sum() > 30 and (pred[cert] == truth[cert]).all() and (rad <= margin + 1e-6).all()


def test_a_constant_classifier_is_certified_to_the_limit_the_votes_allow():
    "All votes for one class: the radius is sigma * Phi^-1(alpha^(1/n)), the largest n votes can support."
    class Const(nn.Module):
        def forward(self, x): return torch.tensor([[0., 5., 0.]]).expand(len(x), 3)
    x = torch.rand(3, 2, 4, 4)
    pred, rad = certify(Const(), x, sigma=0.25, n0=10, n=200, alpha=0.01)
    assert (pred == 1).all()
    assert torch.allclose(rad, torch.full((3,), 0.25 * norm.ppf(0.01 ** (1 / 200))), atol=1e-6)


def test_votes_sum_to_n_and_repeat_with_one_seed():
    m = _linear(torch.ones(3), 0.)
    x = torch.randn(4, 3)
    c1 = noise_counts(m, x, 0.5, 77, batch_size=20, generator=torch.Generator().manual_seed(5))
    c2 = noise_counts(m, x, 0.5, 77, batch_size=50, generator=torch.Generator().manual_seed(5))
    assert (c1.sum(1) == 77).all() and c1.shape == (4, 2)
    assert all((a == b).all() for a, b in zip(certify(m, x, 0.5, n=300, seed=4), certify(m, x, 0.5, n=300, seed=4)))


@pytest.mark.parametrize('kw,msg', [(dict(sigma=-1.), 'sigma must be a positive number'), (dict(sigma=0.5, n=0), 'n must be an integer'),
                                    (dict(sigma=0.5, n0=0), 'n0 must be an integer'), (dict(sigma=0.5, alpha=2.), 'alpha must be in')])
def test_bad_input_is_refused(kw, msg):
    with pytest.raises(ValueError, match=msg): certify(_linear(torch.ones(3), 0.), torch.randn(2, 3), **kw)


def test_certified_accuracy_counts_correct_and_certified():
    pred, rad, y = torch.tensor([1, 0, -1, 2]), torch.tensor([0.5, 0.1, 0., 0.3]), torch.tensor([1, 1, 0, 2])
    assert certified_accuracy(pred, rad, y, [0., 0.2, 0.4, 1.]) == [2, 2, 1, 0]
    with pytest.raises(ValueError, match='one entry per input'): certified_accuracy(pred, rad, y[:2], [0.])


def test_certify_study_quick_is_reproducible(data_env):
    "The registered runner on synthetic stand-in images: complete table, one seed gives the same record twice."
    from robustml.cifar.certify import COHEN, run_cifar_certify
    a, b = run_cifar_certify('quick', seed=0), run_cifar_certify('quick', seed=0)
    assert a.study == 'cifar-certify' and a.data.source == 'synthetic'
    assert [r['ours'] for r in a.table] == [r['ours'] for r in b.table]
    certified = [r['ours'] for r in a.table[:-1]]
    assert certified == sorted(certified, reverse=True)            # a larger radius never certifies more images
    assert {r['paper'] for r in a.table if r['paper'] is not None} == set(COHEN.values())
