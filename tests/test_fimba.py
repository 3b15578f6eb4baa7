"Tests of robustml.fimba (chapter 4): the attack's contract, TreeSHAP, leak-free preparation, the VAE's KL, the detectors, the CLI."
import dataclasses, json, math, os, shutil, subprocess, sys

import numpy as np
import pytest
import torch

import robustml.fimba as F


def _data(n=12, p=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)); y = np.arange(n) % 2
    return X, y, rng.normal(size=(4, p)), rng.normal(size=(3, p))


def _reference(X, y, ranking, k, pn, pp, frac):
    "The contract written row by row (slow, obviously right)."
    out = X.copy()
    for i in range(len(X)):
        pool = pn if y[i] == 0 else pp
        if len(pool) == 0 or k == 0: continue
        a = pool[np.argmin(((pool - X[i]) ** 2).sum(1))]
        for f in ranking[:k]: out[i, f] = X[i, f] + frac * (a[f] - X[i, f])
    return out


@pytest.mark.parametrize('k', [0, 1, 3, 7])
def test_attack_matches_the_contract(k):
    X, y, pn, pp = _data()
    rank = np.array([3, 0, 6, 1, 5, 2, 4])
    X0 = X.copy()
    out = F.fimba_attack(X, y, rank, k, pn, pp)
    np.testing.assert_allclose(out, _reference(X, y, rank, k, pn, pp, 8 / 9), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(X, X0)  # X is never modified
    assert out is not X
    # only the top-k columns change
    untouched = np.setdiff1d(np.arange(X.shape[1]), rank[:k])
    np.testing.assert_array_equal(out[:, untouched], X[:, untouched])


def test_attack_frac_one_copies_the_nearest_target():
    X, y, pn, pp = _data()
    out = F.fimba_attack(X, y, np.arange(7), 7, pn, pp, frac=1.0)
    for i in range(len(X)):
        pool = pn if y[i] == 0 else pp
        assert any(np.allclose(out[i], a) for a in pool)


def test_empty_pool_leaves_rows_unchanged():
    X, y, pn, _ = _data()
    out = F.fimba_attack(X, y, np.arange(7), 4, pn, np.empty((0, 7)))
    np.testing.assert_array_equal(out[y == 1], X[y == 1])
    assert not np.allclose(out[y == 0], X[y == 0])
    out2 = F.fimba_attack(X, y, np.arange(7), 4, None, np.zeros((0, 7)))
    np.testing.assert_array_equal(out2, X)


def test_attack_k_zero_is_identity():
    X, y, pn, pp = _data()
    np.testing.assert_array_equal(F.fimba_attack(X, y, np.arange(7), 0, pn, pp), X)


@pytest.mark.parametrize('bad', [
    dict(k=8), dict(k=-1), dict(k=2.5),
    dict(y=np.zeros(5, int)), dict(y=np.full(12, 2)),
    dict(pool_neg=np.zeros((3, 6))), dict(pool_pos=np.zeros(7)),
    dict(ranking=np.array([0, 9])), dict(X=np.zeros(7)),
])
def test_attack_bad_input_raises_clear_error(bad):
    X, y, pn, pp = _data()
    kw = dict(X=X, y=y, ranking=np.arange(7), k=2, pool_neg=pn, pool_pos=pp) | bad
    with pytest.raises(ValueError):
        F.fimba_attack(**kw)


def test_k_above_columns_message():
    X, y, pn, pp = _data()
    with pytest.raises(ValueError, match='exceeds'):
        F.fimba_attack(X, y, np.arange(7), 8, pn, pp)


def test_attack_is_fast_on_golub_sized_input():
    "Every k from 1 to 2,000 on 24 rows: vectorised, well under a few seconds even on a busy machine."
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (24, 2000)); y = np.arange(24) % 2
    pools = dict(neg=rng.uniform(-1, 1, (5, 2000)), pos=rng.uniform(-1, 1, (3, 2000)))
    t = F.time_attack(X, y, rng.permutation(2000), pools, F.k_grid(2000, 12), repeat=1)
    assert t < 2.0, t


def test_tree_shap_sums_to_margin():
    import xgboost as xgb
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 10)); y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    for m in (xgb.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=0),
              xgb.XGBRFClassifier(n_estimators=20, max_depth=4, n_jobs=1, random_state=0)):
        m.fit(X, y)
        phi = F.tree_shap(m, X)
        assert phi.shape == (80, 11)
        np.testing.assert_allclose(phi.sum(1), m.predict(X, output_margin=True), atol=1e-4)


def test_linear_importance_is_exact_shap():
    "For a linear model, sum over genes of w_j (x_j - mean_j) equals the margin minus the mean margin."
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 5)); y = (X[:, 0] > 0).astype(int)
    m = F._logreg().fit(X, y)
    phi = m.coef_[0] * (X - X.mean(0))
    d = m.decision_function(X)
    np.testing.assert_allclose(phi.sum(1), d - d.mean(), atol=1e-10)


def test_prep_never_fits_on_test_rows():
    d = F.synthetic_data(0, n_train=30, n_test=20, n_features=60, n_informative=5)
    tr, te = F.split_indices(d.y, 3)
    assert not set(tr) & set(te) and len(tr) + len(te) == len(d.y)
    for select in ('variance', 't-test'):
        prep = F.GenePrep(10, select).fit(d.X, d.y, rows=tr)
        np.testing.assert_array_equal(prep.fit_rows_, tr)  # what it was fitted on
        # the fit depends on training rows only: corrupt every test row and its labels, the fit is the same
        X2, y2 = d.X.copy(), d.y.copy(); X2[te] = 1e6 * np.random.default_rng(0).normal(size=X2[te].shape); y2[te] = 1 - y2[te]
        prep2 = F.GenePrep(10, select).fit(X2, y2, rows=tr)
        np.testing.assert_array_equal(prep.keep_, prep2.keep_)
        np.testing.assert_array_equal(prep.lo_, prep2.lo_); np.testing.assert_array_equal(prep.span_, prep2.span_)
    Xtr, Xte, prep = F.prepare_split(d, tr, te, 10)
    np.testing.assert_array_equal(prep.fit_rows_, tr)
    assert Xtr.min() == -1 and Xtr.max() == 1


def test_kl_closed_forms():
    from torch.distributions import Normal, kl_divergence
    g = torch.Generator().manual_seed(0)
    mu, log_s = torch.randn(6, 4, generator=g), 0.5 * torch.randn(6, 4, generator=g)
    ref = kl_divergence(Normal(mu, log_s.exp()), Normal(0., 1.)).sum(-1)
    torch.testing.assert_close(F.kl_normal(mu, log_s), ref)
    # the public code's term = KL to N(0, I/2) + log(2)/2 per latent dimension
    half = kl_divergence(Normal(mu, log_s.exp()), Normal(0., math.sqrt(0.5))).sum(-1)
    torch.testing.assert_close(F.kl_original(mu, log_s), half + 4 * 0.5 * math.log(2))
    assert torch.all(F.kl_normal(torch.zeros(1, 3), torch.zeros(1, 3)) == 0)


def test_spectral_detector_finds_planted_outliers():
    rng = np.random.default_rng(0)
    n, p = 200, 30
    X = rng.normal(size=(n, p)); labels = np.zeros(n, int)
    planted = np.zeros(n, bool); planted[:10] = True
    X[planted] += 6.0 * np.eye(p)[0]  # 5% of the rows shifted by 6 SD along one direction
    s = F.spectral_scores(X, labels)
    assert F.detection_auc(s[~planted], s[planted]) > 0.95
    keep = F.spectral_filter(s, labels, 0.075)
    assert (~keep).sum() == 15 and (~keep[planted]).sum() >= 9


def test_pca_residual_detector_on_off_manifold_rows():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(100, 3)); W = rng.normal(size=(3, 40))
    ref = Z @ W + 0.05 * rng.normal(size=(100, 40))
    clean = rng.normal(size=(20, 3)) @ W + 0.05 * rng.normal(size=(20, 40))
    off = clean + rng.normal(size=clean.shape)
    assert F.detection_auc(F.pca_residual_scores(ref, clean, 3), F.pca_residual_scores(ref, off, 3)) > 0.95


def test_c2st_paired_copies_are_indistinguishable():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 5))
    assert abs(F.c2st_auc(A, A.copy(), paired=True) - 0.5) < 0.15
    assert F.c2st_auc(A, A + 3.0, paired=True) > 0.95


def test_config_profiles():
    q, c = F.fimba_config('quick'), F.fimba_config('course')
    assert q.datasets == ('synthetic',) and set(c.datasets) == {'golub', 'tcga-breast'}
    assert c.poison_seeds >= 20 and c.frac == 8 / 9
    with pytest.raises(ValueError): F.fimba_config('huge')


def test_cli_reproduce_quick(tmp_path):
    env = dict(os.environ, ROBUSTML_PROGRESS='0', OMP_NUM_THREADS='1')
    env.pop('ROBUSTML_PROFILE', None)
    exe = shutil.which('robustml')
    cmd = [exe] if exe else [sys.executable, '-c', 'import sys; from robustml.cli import main; sys.exit(main())']
    r = subprocess.run(cmd + ['reproduce', 'fimba', '--profile', 'quick', '--out', str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / 'fimba.json').read_text())
    assert rec['study'] == 'fimba' and rec['profile'] == 'quick' and rec['data']['source'] == 'synthetic'
    assert {'quantity', 'paper', 'ours', 'ci', 'note'} <= set(rec['table'][0])


def test_pancan_task_from_the_registered_archive(tmp_path, monkeypatch):
    "The paper profile's Pan-Cancer task: BRCA (1) against the other four tumour types (0), read from ROBUSTML_DATA."
    import dataclasses, io, tarfile
    import pandas as pd
    from robustml import datasets as D
    ids = [f'sample_{i}' for i in range(5)]
    files = {'data.csv': pd.DataFrame(np.arange(10.).reshape(5, 2), index=ids, columns=['gene_0', 'gene_1']).to_csv(),
             'labels.csv': pd.DataFrame({'Class': ['BRCA', 'LUAD', 'BRCA', 'PRAD', 'KIRC']}, index=ids).to_csv()}
    (tmp_path/'pancan').mkdir()
    with tarfile.open(tmp_path/'pancan'/'TCGA-PANCAN-HiSeq-801x20531.tar.gz', 'w:gz') as tf:
        for name, text in files.items():
            b = text.encode(); ti = tarfile.TarInfo(f'TCGA-PANCAN-HiSeq-801x20531/{name}'); ti.size = len(b); tf.addfile(ti, io.BytesIO(b))
    monkeypatch.setenv('ROBUSTML_DATA', str(tmp_path)); monkeypatch.setenv('ROBUSTML_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('ROBUSTML_OFFLINE', '1')
    form = dataclasses.replace(D.DATASETS['pancan'].forms[0], sha256=D.file_hash(tmp_path/'pancan'/'TCGA-PANCAN-HiSeq-801x20531.tar.gz'))
    monkeypatch.setitem(D.DATASETS, 'pancan', dataclasses.replace(D.DATASETS['pancan'], forms=(form,)))
    cfg = dataclasses.replace(F.fimba_config('quick'), datasets=('pancan',))
    data, info = F.load_fimba_data(cfg)
    g = data['pancan']
    assert g.X.shape == (5, 2) and g.y.tolist() == [1, 0, 1, 0, 0] and g.classes == ('rest', 'BRCA') and info.source == 'real'
    with pytest.raises(ValueError, match="positive must be one of"): F.pancan_data('GBM')


@pytest.mark.parametrize('k', [0, 2, 7])
def test_three_class_attack_matches_the_contract_row_by_row(k):
    "Each row of class c moves toward its nearest row of pools[c]; a class with an empty pool is left alone; X is untouched."
    rng = np.random.default_rng(3)
    X = rng.normal(size=(15, 7)); y = np.arange(15) % 3
    pools = [rng.normal(size=(4, 7)), np.empty((0, 7)), rng.normal(size=(2, 7))]
    rank = rng.permutation(7); X0 = X.copy()
    out = F.fimba_attack_classes(X, y, rank, k, pools)
    ref = X.copy()
    for i in range(len(X)):
        pool = pools[y[i]]
        if len(pool) == 0 or k == 0: continue
        a = pool[np.argmin(((pool - X[i]) ** 2).sum(1))]
        for f in rank[:k]: ref[i, f] = X[i, f] + 8 / 9 * (a[f] - X[i, f])
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(out[y == 1], X[y == 1])
    # two classes: the paper's attack is the same function
    X2, y2, pn, pp = _data()
    np.testing.assert_array_equal(F.fimba_attack(X2, y2, np.arange(7), min(k, 7), pn, pp),
                                  F.fimba_attack_classes(X2, y2, np.arange(7), min(k, 7), [pn, pp]))


def test_three_class_bad_input_and_pools():
    X = np.zeros((4, 3)); y = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match='class indices 0 ... 2'): F.fimba_attack_classes(X, y, np.arange(3), 1, [X, X, X])
    with pytest.raises(ValueError, match='pool of class 1 must have 3 columns'):
        F.fimba_attack_classes(X, y % 3, np.arange(3), 1, [X, np.zeros((2, 2)), X])
    with pytest.raises(ValueError, match='pool_pos must have 3 columns'): F.fimba_attack(X, y % 2, np.arange(3), 1, X, np.zeros((2, 2)))
    Xtr = np.arange(12.).reshape(6, 2); ytr = np.array([0, 0, 1, 1, 2, 2]); oof = np.array([1, 0, 1, 1, 0, 1])
    p = F.class_pools(Xtr, ytr, oof, 3)
    np.testing.assert_array_equal(p['pools'][0], Xtr[[0]])          # class 0 rows the model calls something else
    np.testing.assert_array_equal(p['pools'][1], Xtr[ytr != 1])     # none: the other classes are the fallback
    np.testing.assert_array_equal(p['pools'][2], Xtr[[4, 5]])
    assert p['sizes'] == [1, 0, 2] and p['fallback'] == [False, True, False]


# ---------------------------------------------------------------- rankings, k and fractions checked (issue 23)
@pytest.mark.parametrize('rank', [[0, 0, 1, 2, 3, 4, 5], [3, 1, 3], [6, 5, 4, 3, 2, 1, 6]])
def test_ranking_with_duplicates_raises(rank):
    "A duplicate would move fewer than k genes without a word: refused whatever k is."
    X, y, pn, pp = _data()
    dup = [c for c in set(rank) if rank.count(c) > 1]
    for k in (1, len(rank)):
        with pytest.raises(ValueError, match=rf'ranking lists 1 column\(s\) more than once \({dup[0]}\)'):
            F.fimba_attack(X, y, np.array(rank), k, pn, pp)
        with pytest.raises(ValueError, match='more than once'):
            F.fimba_attack_classes(X, y, np.array(rank), k, [pn, pp])
        with pytest.raises(ValueError, match='rank lists'):
            F.attack_variant('top uniform', X, y, np.array(rank), k, dict(neg=pn, pos=pp), X, y, np.random.default_rng(0))


def test_partial_rankings_and_k():
    "A ranking may list fewer columns than X has; k may not exceed it, nor the columns of X."
    X, y, pn, pp = _data()
    out = F.fimba_attack(X, y, np.array([5, 2]), 2, pn, pp)
    np.testing.assert_allclose(out, _reference(X, y, [5, 2], 2, pn, pp, 8 / 9), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r'k = 3 exceeds the 2 ranked columns of X \(X has 7\)'): F.fimba_attack(X, y, np.array([5, 2]), 3, pn, pp)
    with pytest.raises(ValueError, match='k = 8 exceeds the 7 ranked columns'): F.fimba_attack(X, y, np.arange(7), 8, pn, pp)
    with pytest.raises(ValueError, match='k must be a non-negative integer'): F.fimba_attack(X, y, np.arange(7), True, pn, pp)
    with pytest.raises(ValueError, match=r'column indices in \[0, 7\)'): F.fimba_attack(X, y, np.arange(7.), 2, pn, pp)
    rng = np.random.default_rng(0)
    for variant in ('fimba', 'brute force', 'random genes'):
        with pytest.raises(ValueError, match='k = 9 exceeds'):
            F.attack_variant(variant, X, y, np.arange(7), 9, dict(neg=pn, pos=pp), X, y, rng)


@pytest.mark.parametrize('frac', [0, 0.0, -0.1, 1.0001, 2, float('nan'), float('inf'), True, '0.5', None])
def test_frac_out_of_range_raises(frac):
    X, y, pn, pp = _data()
    with pytest.raises(ValueError, match=r'frac must be a number in \(0, 1\]'): F.fimba_attack(X, y, np.arange(7), 2, pn, pp, frac=frac)
    with pytest.raises(ValueError, match='frac'):
        F.attack_variant('opposite', X, y, np.arange(7), 2, dict(neg=pn, pos=pp), X, y, np.random.default_rng(0), frac=frac)
    with pytest.raises(ValueError, match=r'FimbaConfig.frac must be a number in \(0, 1\]'):
        dataclasses.replace(F.fimba_config('quick'), frac=frac)


@pytest.mark.parametrize('frac', [1e-3, 0.5, 8 / 9, 1, np.float32(0.25)])
def test_valid_fracs_follow_the_contract(frac):
    X, y, pn, pp = _data()
    np.testing.assert_allclose(F.fimba_attack(X, y, np.arange(7), 4, pn, pp, frac=frac),
                               _reference(X, y, np.arange(7), 4, pn, pp, frac), rtol=0, atol=1e-6)


def test_config_and_filter_fractions():
    cfg = F.fimba_config('quick')
    for kw in (dict(test_size=0.), dict(test_size=1.), dict(test_size=-0.2), dict(poison_rates=(0., 1.2)),
               dict(poison_rates=(-0.1,)), dict(poison_rates=())):
        with pytest.raises(ValueError, match='FimbaConfig.(test_size|poison_rates)'): dataclasses.replace(cfg, **kw)
    assert dataclasses.replace(cfg, poison_rates=(0., 1.)).poison_rates == (0., 1.)
    s, lab = np.arange(6.), np.array([0, 0, 0, 1, 1, 1])
    for share in (-0.1, 1.5, float('nan')):
        with pytest.raises(ValueError, match=r'share must be a fraction .* in \[0, 1\]'): F.spectral_filter(s, lab, share)
    assert F.spectral_filter(s, lab, 1 / 3).tolist() == [True, True, False, True, True, False]


def test_rate_ci_pools_counts_when_degenerate():
    "Equal rates in every split get the pooled Wilson interval of their counts, never a zero-width interval."
    from robustml.stats import mean_ci, wilson_ci
    m, lo, hi = F.rate_ci([0.5, 0.5, 0.5], [4, 5, 6], [8, 10, 12])
    assert m == 0.5 and (lo, hi) == pytest.approx(wilson_ci(15, 30)) and lo < m < hi
    assert F.rate_ci([0., 0.], [0, 0], [10, 10])[2] > 0          # 0 of 20 flipped: the interval still says how sure we are
    assert F.rate_ci([0.2, 0.4]) == pytest.approx((0.3, max(mean_ci([0.2, 0.4])[1], 0), min(mean_ci([0.2, 0.4])[2], 1)))
    t = F.summarise_attack(pd_attack_rows())
    r = t.iloc[0]
    assert r.flip_pos_rate == 0 and r.flip_pos_rate_hi > 0      # every split flipped none: pooled Wilson upper bound above 0


def pd_attack_rows():
    import pandas as pd
    return pd.DataFrame([dict(dataset='d', model='m', variant='fimba', k=5, accuracy=0.9, fp=1, fn=1, n_neg=10, n_pos=10,
                              ok_neg=9, ok_pos=9, flip_neg=s, flip_pos=0) for s in (1, 2, 3)])


def test_findings_on_a_quick_run():
    "The findings follow from the run's intervals: every claim gets one of the stated verdicts and names each data set."
    cfg = F.fimba_config('quick')
    st = F.fimba_setup(cfg, 0)
    for step in F.FIMBA_STEPS: step(st)
    f = F.fimba_findings(st)
    assert len(f) == 5 and f[-1]['verdict'] == 'not testable here'
    assert all(x['verdict'].startswith(('reproduced', 'not reproduced', 'partly reproduced', 'not testable')) for x in f)
    assert all('synthetic' in x['evidence'] for x in f[:4])
    for r in F.fimba_results(st).table:   # no degenerate interval around an estimate strictly between 0 and 100
        if r['ci'] is not None and 0 < r['ours'] < 100 and '%' not in r['quantity'] and 'ratio' not in r['quantity']:
            assert r['ci'][1] > r['ci'][0], r
