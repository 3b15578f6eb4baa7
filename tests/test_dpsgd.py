"Tests of robustml.dpsgd (chapter 6, DP-SGD with Opacus on digits): reproducibility, the accountant, clipping, bad input, CLI."
import json, math, os, shutil, subprocess, sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import robustml.dpsgd as D
from robustml.attacks import dp_advantage_bound


@pytest.fixture(scope='module')
def quick():
    return D.dpsgd_config('quick')


@pytest.fixture(scope='module')
def data(quick):
    d, info = D.load_dpsgd_data(quick)
    assert info.source == 'real' and info.name == 'digits' and 'REAL data' in str(info)
    return d


def test_config_and_split(quick, data):
    c = D.dpsgd_config('course')
    assert (quick.profile, c.profile) == ('quick', 'course') and c.n_seeds >= 3 and 0.5 in c.epsilons and c.delta == 1e-5
    idx = np.concatenate([data.members, data.nonmembers, data.test])
    assert len(np.unique(idx)) == len(data.y) == 1797 and len(data.members) == len(data.nonmembers) == quick.n_members
    assert data.X.dtype == np.float32 and data.X.min() >= -1 and data.X.max() <= 1


def test_bad_input_raises(quick, data):
    with pytest.raises(ValueError, match='Unknown profile'): D.dpsgd_config('huge')
    with pytest.raises(ValueError, match='Unknown profile'): D.run_dpsgd('huge')
    for eps in (0., -1., float('nan')):
        with pytest.raises(ValueError, match='epsilon'): D.check_privacy(eps, 1e-5)
    for delta in (0., 1., -0.1, 2.):
        with pytest.raises(ValueError, match='delta'): D.check_privacy(1., delta)
    with pytest.raises(ValueError, match='epsilon'): D.train_private(data.X[:20], data.y[:20], 0., quick)
    with pytest.raises(ValueError, match='delta'): D.train_private(data.X[:20], data.y[:20], 1., replace(quick, delta=0.))
    with pytest.raises(ValueError, match='n_members'): D.load_dpsgd_data(replace(quick, n_members=1000))
    with pytest.raises(TypeError): D.load_dpsgd_data('quick')
    with pytest.raises(ValueError): D.mia_accuracy_bound(0.)


def test_accountant_keeps_the_target(quick, data):
    "Opacus picks the noise so that the spent epsilon (RDP accountant) stays at or below the target, and less epsilon means more noise."
    X, y = data.X[data.members], data.y[data.members]
    facts = {e: D.train_private(X, y, e, replace(quick, epochs=2), seed=1)[1] for e in (0.5, 4.)}
    for e, f in facts.items():
        assert f['epsilon_spent'] <= e * (1 + 1e-6) and f['epsilon_spent'] > 0.5 * e, f
        assert math.isclose(f['sample_rate'], 1 / math.ceil(len(y) / quick.batch_size)) and f['steps'] > 0
    assert facts[0.5]['noise_multiplier'] > facts[4.]['noise_multiplier'] > 0
    # the spent epsilon recounted from (sigma, q, steps) alone
    from opacus.accountants import RDPAccountant
    a = RDPAccountant(); f = facts[0.5]; a.history = [(f['noise_multiplier'], f['sample_rate'], f['steps'])]
    assert math.isclose(a.get_epsilon(quick.delta), f['epsilon_spent'], rel_tol=1e-6)


@pytest.mark.parametrize('clip', [1e-3, 0.1, 1.0, 100.])
def test_clipping_bounds_each_example(data, clip):
    "Without noise, Opacus turns one example's gradient into its clipped version: norm min(raw, C)."
    torch.manual_seed(0)
    net = D.digits_net(32)
    for i in data.members[:4]:
        raw, clipped = D.clipped_gradient_norm(net, torch.as_tensor(data.X[i:i + 1]), torch.as_tensor(data.y[i:i + 1]), clip)
        assert clipped <= clip * (1 + 1e-5) and math.isclose(clipped, min(raw, clip), rel_tol=1e-4), (raw, clipped)


def test_membership_bound():
    "delta = 0 gives the chapter's tanh(eps/2) advantage bound; delta adds; infinite epsilon bounds nothing."
    for e in (0.1, 1., 3.):
        assert math.isclose(2 * float(D.mia_accuracy_bound(e, 0.)) - 1, float(dp_advantage_bound(e)), rel_tol=1e-12)
        assert float(D.mia_accuracy_bound(e, 1e-3)) > float(D.mia_accuracy_bound(e, 0.))
    assert float(D.mia_accuracy_bound(math.inf)) == 1.


def test_pooled_rate_never_zero_width():
    r, lo, hi = D.pooled_rate([597, 597], [597, 597])
    assert r == 1. and lo < 1. == hi
    r, lo, hi = D.pooled_rate([300], [597])
    assert lo < r < hi


def test_quick_run_reproducible_and_table():
    "One seed gives the same numbers twice (weights, Poisson sampling and noise are all seeded)."
    a, b = D.run_dpsgd('quick', seed=0), D.run_dpsgd('quick', seed=0)
    assert a.table == b.table and a.frames['dpsgd'].equals(b.frames['dpsgd'])
    m = a.metrics
    assert m['max_spent_over_target'] <= 1 + 1e-6
    assert a.profile == 'quick' and a.data.source == 'real' and a.config['opacus'].startswith('1.')
    assert all(set(r) == {'quantity', 'paper', 'ours', 'ci', 'note'} for r in a.table)
    for r in a.table: assert r['ci'][0] - 1e-9 <= r['ours'] <= r['ci'][1] + 1e-9 and r['ci'][0] < r['ci'][1], r
    for e in D.dpsgd_config('quick').epsilons:   # a real attack cannot beat the bound by more than its interval allows
        assert m[f'mia_eps{e:g}_ci'][0] <= m[f'mia_eps{e:g}_bound']
    # plumbing under quick: the network is trained for 4 epochs only; even so it is far above chance (10%), whose
    # 99.9% Wilson upper end on 597 test images is below 15%
    assert m['net_nonprivate_acc_ci'][0] > 0.15
    json.dumps(a.to_dict())


def test_parallel_equals_serial(quick, data):
    "Each trial takes its seed from its item, so joblib workers give the serial numbers."
    from robustml.core import parallel_map
    from functools import partial
    c = replace(quick, epsilons=(2.,), epochs=1)
    s = parallel_map(partial(D.dpsgd_trial, data, c), [5, 6], n_jobs=1)
    p = parallel_map(partial(D.dpsgd_trial, data, c), [5, 6], n_jobs=2)
    assert s == p


def test_study_registered():
    from robustml.studies import STUDY_LIST, get_study
    st = get_study('dpsgd-digits')
    assert st.runner is D.run_dpsgd and st.paper['mnist_eps2_acc_pct'] == 95.0
    assert ('dpsgd-digits', 'robustml.dpsgd', ()) in STUDY_LIST


def test_cli_reproduce_quick(tmp_path):
    out = tmp_path / 'out'
    env = dict(os.environ, ROBUSTML_PROGRESS='0', OMP_NUM_THREADS='1')
    exe = shutil.which('robustml')   # the console script, as a reader runs it
    cmd = [exe] if exe else [sys.executable, '-c', 'import sys; from robustml.cli import main; sys.exit(main())']
    r = subprocess.run(cmd + ['reproduce', 'dpsgd-digits', '--profile', 'quick', '--out', str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    rec = json.loads((out / 'dpsgd-digits.json').read_text())
    assert rec['study'] == 'dpsgd-digits' and rec['profile'] == 'quick' and len(rec['table']) >= 7
