"Tests of robustml.cifar.full: the residual network, the profiles, and the full-scale runner (quick profile)."
import json

import pytest
import torch

from robustml import datasets as rdata
from robustml.cifar import common as cmn, fgsm as ch1, full as cf
from robustml.core import Results
from robustml.studies import get_study


def test_resnet9_shapes_widths_and_bad_width():
    net = cf.resnet9(1.)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 8 and [c.out_channels for c in convs][:2] == [64, 128] and convs[-1].out_channels == 512
    assert all(c.bias is None for c in convs)                   # BatchNorm follows every convolution
    assert cf.n_params(cf.resnet9(0.5)) < cf.n_params(net) / 3   # half width: about a quarter of the parameters
    assert cf.resnet9(0.25, n_classes=3)(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    for w in (0, -0.5):
        with pytest.raises(ValueError, match='width'): cf.resnet9(w)


def test_residual_unit_is_identity_plus_branch():
    torch.manual_seed(0)
    r = cf.Residual(4).eval()
    x = torch.randn(2, 4, 8, 8)
    assert torch.allclose(r(x), x + r.f(x))


def test_profiles_scale_up_to_the_full_training_set():
    q, c, p = (cf.full_config(k) for k in ('quick', 'course', 'paper'))
    assert p.n_train == 49000 and p.n_val == 1000 and p.n_test == 10000
    assert q.n_train < c.n_train < p.n_train and q.epochs <= c.epochs <= p.epochs
    for cfg in (q, c, p): assert cfg.n_strong <= cfg.n_pgd <= cfg.n_test and cfg.eps == cmn.EPS5
    with pytest.raises(ValueError): cf.full_config('huge')


def test_course_profile_without_real_data_fails_clearly(data_env):
    with pytest.raises(rdata.DataUnavailable, match='ROBUSTML_DATA'): cf.load_full_data(cf.full_config('course'))


def test_runner_quick_synthetic_is_reproducible_and_complete(data_env, tmp_path):
    "Plumbing and reproducibility (one seed, the same numbers twice); under quick the model sits near chance."
    study = get_study('cifar-full')
    assert study.paper == {'clean': 77.98, 'seed_fgsm': 47.61}   # the seed's adversarially trained model
    a, b = study.run('quick', seed=1), study.run('quick', seed=1)
    assert isinstance(a, Results) and a.profile == 'quick' and a.data.source == 'synthetic'
    m = a.metrics
    for col in ch1.COLUMNS:
        assert 0 <= m[col] <= 100
        lo, hi = m[col + '_ci']; assert lo <= m[col] <= hi
    # the verdict rests on AutoAttack where the profile measures it, else on PGD-20
    assert m['target_attack'] == ('aa_5' if 'aa_5' in m else 'pgd20_5')
    assert m['target_met'] == (m['clean'] >= 78 and m[m['target_attack']] >= 48)
    assert len(m['trajectory']) == cf.full_config('quick').epochs and m['train_s'] > 0
    assert [r['train_s'] for r in m['trajectory']] == sorted(r['train_s'] for r in m['trajectory'])
    # one seed, the same numbers (timings aside)
    drop = lambda d: {k: v for k, v in d.items() if k not in ('train_s', 'trajectory', 'time_to_seed_clean_s',
                                                              'time_to_seed_numbers_s')}
    assert drop(a.metrics) == drop(b.metrics)
    assert [(r['val_clean'], r['val_pgd10']) for r in a.metrics['trajectory']] == \
           [(r['val_clean'], r['val_pgd10']) for r in b.metrics['trajectory']]
    assert a.comparison().loc['clean', 'ours'] == m['clean']
    # the record's table, in the shared schema
    # clean, seed FGSM, then per budget PGD-20, PGD-50, PGD-20 on the AutoAttack images and AutoAttack itself
    q = [r['quantity'] for r in a.table]
    assert len(q) == 10 and [x.startswith('AutoAttack') for x in q] == [False] * 5 + [True] + [False] * 3 + [True]
    aa8 = a.table[-1]; assert aa8['paper'] == cf.WONG2020['aa_8'] and 'Wong' in aa8['note']
    # every row names the images it was measured on (the profile's scale is in the record's config, printed by the page)
    assert all(set(r) == {'quantity', 'paper', 'ours', 'ci', 'note'} and 'test images' in r['note'] for r in a.table)
    assert a.table[0]['paper'] == 77.98 and a.table[0]['ours'] == m['clean'] and a.table[0]['ci'] == m['clean_ci']
    back = Results.load(a.save(tmp_path/'full.json'))
    assert back.metrics == json.loads(json.dumps(a.to_dict()))['metrics']
