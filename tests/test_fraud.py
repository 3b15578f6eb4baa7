"""Tests of robustml.fraud (chapter 5) and its data: the simulated transactions, leakage, thresholds and the study runner."""
import dataclasses, json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import RepeatedStratifiedKFold, train_test_split

from robustml import fraud as F
from robustml.datasets import tabular
from robustml.datasets.tabular import synthetic_creditcard
from robustml import datasets as D
from robustml.core import DataInfo, Results
from robustml.studies import get_study


def small_data(n=6000, rate=0.02, seed=1) -> F.FraudData:
    "A small SIMULATED dataset whose rows are all distinct (so row hashes identify rows)."
    df = synthetic_creditcard(n, fraud_rate=rate, seed=seed)
    X, y = df.drop(columns='Class'), df['Class'].to_numpy()
    assert not X.duplicated().any()
    return F.FraudData('test', f'{F.SIMULATED} test', X, y, DataInfo('test', 'synthetic'))

TINY = dict(n_estimators=3, max_depth=3, max_bin=32)


# --- the generator -----------------------------------------------------------------------------------------------

def test_generator_shape_and_fraud_rate():
    df = synthetic_creditcard()
    assert df.shape == (284_807, 31)
    assert list(df.columns) == ['Time'] + [f'V{i}' for i in range(1, 29)] + ['Amount', 'Class']
    assert df['Class'].sum() == 492 and df['Class'].mean() == pytest.approx(0.001727, abs=1e-6)
    assert df['Time'].min() >= 0 and df['Time'].max() <= 2*tabular.DAY and df['Time'].is_monotonic_increasing
    assert (df['Amount'] >= 0).all() and df.notna().all().all()
    # frauds really differ on the shifted components and not on the others
    fr, ok = df[df.Class == 1], df[df.Class == 0]
    assert abs(fr.V14.mean() - ok.V14.mean()) > 1 and abs(fr.V28.mean() - ok.V28.mean()) < 0.2


@pytest.mark.parametrize('n,rate', [(10_000, 0.01), (50_000, tabular.N_FRAUDS/tabular.N_TRANSACTIONS), (1000, 0.3)])
def test_generator_rate_other_sizes(n, rate):
    df = synthetic_creditcard(n, fraud_rate=rate, seed=5)
    assert len(df) == n and df['Class'].sum() == round(n*rate)


def test_generator_seeded_and_validates():
    a, b, c = (synthetic_creditcard(2000, seed=s) for s in (7, 7, 8))
    assert a.equals(b) and not a.equals(c)
    for kw in [dict(n=1), dict(n=100, fraud_rate=0), dict(n=100, fraud_rate=1.2), dict(n=100, separation=-1), dict(n=10.5)]:
        with pytest.raises(ValueError): synthetic_creditcard(**kw)


def quick_cfg(**kw) -> F.FraudConfig:
    return dataclasses.replace(F.fraud_config('quick'), **kw)


# --- settings and data -------------------------------------------------------------------------------------------

def test_fraud_config_resolves_the_profile_once():
    q, c, p = (F.fraud_config(x) for x in ('quick', 'course', 'paper'))
    assert (q.profile, c.profile, p.profile) == ('quick', 'course', 'paper')
    assert q.transaction_rows == 30_000 and c.transaction_rows is None and p.demo_rows is None
    assert c.cv_plan(c.large_rows + 1) == c.cv_large and c.cv_plan(c.large_rows) == c.cv_small
    assert c.xgb['n_estimators'] == 100 and q.xgb['n_jobs'] == 1   # quick: one thread (tests run side by side)
    t = F.fraud_profiles()
    assert list(t.columns) == ['quick', 'course', 'paper'] and 'xgb.n_estimators' in t.index
    with pytest.raises(ValueError, match='Unknown profile'): F.fraud_config('fast')


def test_load_transactions_labels_simulated(monkeypatch):
    monkeypatch.setattr(F, 'have', lambda name: False)
    d = F.load_transactions(quick_cfg(transaction_rows=5000))
    assert d.key == 'simulated' and F.SIMULATED in d.label and d.info.source == 'synthetic'
    assert F.SIMULATED in str(d.info) and len(d.y) == 5000


def test_load_transactions_prefers_real_file(monkeypatch, tmp_path):
    "When creditcard.csv is found it is used (here a stand-in frame plays the verified file)."
    fake = synthetic_creditcard(20_000, seed=2)
    monkeypatch.setattr(F, 'have', lambda name: name == 'creditcard')
    monkeypatch.setattr(F, 'load_creditcard', lambda *a, **k: fake)
    monkeypatch.setattr(F, 'find', lambda name, download=True: tmp_path/'creditcard.csv')
    d = F.load_transactions(quick_cfg(transaction_rows=10_000))
    assert d.key == 'creditcard' and d.real and len(d.y) == 10_000 and abs(d.y.sum() - 10_000*fake.Class.mean()) <= 1


def test_mammography_fallback_is_labelled(monkeypatch):
    monkeypatch.setattr(F, 'use_real', lambda name, profile=None: False)
    d = F.load_mammography_data(quick_cfg())
    assert d.key == 'mammography-synthetic' and not d.real and 'SYNTHETIC' in d.label and 'SYNTHETIC' in str(d.info)
    assert 0.01 < d.y.mean() < 0.05 and d.X.shape[1] == 6


def test_missing_mammography_fails_clearly_outside_quick(monkeypatch):
    "The chapter leaves the decision to `robustml.datasets.use_real`: a stand-in under quick, `DataUnavailable` otherwise."
    def missing(name, download=True): raise D.DataUnavailable(name, ['nowhere'])
    monkeypatch.setattr(D, 'have', lambda name: False)
    monkeypatch.setattr(D, 'find', missing)
    assert not F.load_mammography_data(quick_cfg()).real
    with pytest.raises(D.DataUnavailable, match='mammography'): F.load_mammography_data(F.fraud_config('course'))


def test_load_fraud_data_describes_every_dataset(monkeypatch):
    monkeypatch.setattr(F, 'have', lambda name: False)
    monkeypatch.setattr(F, 'use_real', lambda name, profile=None: False)
    ds, info = F.load_fraud_data(quick_cfg(transaction_rows=4000), seed=3)
    assert [d.key for d in ds] == ['simulated', 'mammography-synthetic'] and info.source == 'synthetic'
    assert info.sizes == {'simulated': 4000, 'mammography-synthetic': len(ds[1].y)}
    assert F.SIMULATED in info.name and 'creditcard.csv was not available' in info.notes


# --- leakage: no pipeline ever sees a test (or validation) row while fitting --------------------------------------

def test_holdout_never_fits_on_test_or_validation_rows():
    d = small_data()
    F.FIT_LOG.clear()
    h = F.holdout_eval(d, tuple(F.METHODS), TINY, scaler=F.RecordingScaler('holdout'))
    assert len(F.FIT_LOG['holdout']) == len(F.METHODS) # one fit per method, all recorded
    held_out = F.row_hashes(d.X.iloc[h.test_idx]) | F.row_hashes(d.X.iloc[h.val_idx])
    for rows in F.FIT_LOG['holdout']:
        assert rows == F.row_hashes(d.X.iloc[h.fit_idx]) and not rows & held_out


def test_cross_validation_never_fits_on_the_fold_test_rows():
    d, methods = small_data(), ('baseline', 'smote', 'under')
    F.FIT_LOG.clear()
    F.cv_eval(d, methods, TINY, n_splits=3, n_repeats=2, seed=4, scaler=F.RecordingScaler('cv'))
    folds = list(RepeatedStratifiedKFold(n_splits=3, n_repeats=2, random_state=4).split(d.X, d.y))
    assert len(F.FIT_LOG['cv']) == len(folds)*len(methods)
    for i, rows in enumerate(F.FIT_LOG['cv']):
        tr, te = folds[i // len(methods)]
        assert not rows & F.row_hashes(d.X.iloc[te]) and rows < F.row_hashes(d.X.iloc[tr])


def test_leak_check_catches_the_seed_code():
    "The same check flags the seed's scaler, which is fit on all rows before the split."
    d = small_data()
    F.FIT_LOG.clear()
    F.seed_protocol(d, TINY, fixed=True, scaler=F.RecordingScaler('fixed'))
    F.seed_protocol(d, TINY, fixed=False, scaler=F.RecordingScaler('seed'))
    te_fixed = train_test_split(np.arange(len(d.y)), test_size=0.3, random_state=0, stratify=d.y)[1]
    te_seed = train_test_split(np.arange(len(d.y)), test_size=0.3, random_state=0)[1]
    assert not F.seen_rows('fixed') & F.row_hashes(d.X.iloc[te_fixed])
    assert F.seen_rows('seed') >= F.row_hashes(d.X.iloc[te_seed])


def test_thresholds_come_from_validation_scores():
    d = small_data()
    h = F.holdout_eval(d, ('baseline', 'under'), TINY)
    for m in ('baseline', 'under'):
        pv, pt = h.scores[m]
        assert h.table.loc[m, 'tuned_threshold'] == F.pick_threshold(h.y_val, pv)
        assert h.table.loc[m, 'cost_threshold'] == F.pick_threshold(h.y_val, pv, 'cost', d.cost_fn, d.cost_fp)
        assert h.table.loc[m, 'tuned_recall'] == F.threshold_metrics(h.y_test, pt, h.table.loc[m, 'tuned_threshold'])['recall']


def test_evaluate_split_rejects_overlapping_indices():
    d = small_data(2000, 0.05)
    with pytest.raises(ValueError, match='disjoint'):
        F.evaluate_split(d, np.arange(0, 1200), np.arange(1200, 1600), np.arange(1000, 2000), ('baseline',), TINY)


# --- metrics and thresholds --------------------------------------------------------------------------------------

def test_threshold_metrics_counts():
    m = F.threshold_metrics(np.array([0, 0, 1, 1, 1]), np.array([.9, .1, .8, .2, .5]))
    assert (m['tp'], m['fp'], m['fn'], m['tn']) == (2, 1, 1, 1)
    assert m['precision'] == pytest.approx(2/3) and m['recall'] == pytest.approx(2/3) and m['accuracy'] == .6
    with pytest.raises(ValueError): F.threshold_metrics(np.zeros(3), np.zeros(4))


def test_pick_threshold_matches_brute_force():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.1).astype(int); s = np.round(rng.random(400) + 0.3*y, 2) # ties on purpose
    grid = np.r_[np.unique(s), np.inf]
    f1 = [F.threshold_metrics(y, s, t)['f1'] for t in grid]
    cost = [100*F.threshold_metrics(y, s, t)['fn'] + 5*F.threshold_metrics(y, s, t)['fp'] for t in grid]
    assert F.threshold_metrics(y, s, F.pick_threshold(y, s))['f1'] == pytest.approx(max(f1))
    t = F.pick_threshold(y, s, 'cost', 100, 5)
    assert 100*F.threshold_metrics(y, s, t)['fn'] + 5*F.threshold_metrics(y, s, t)['fp'] == pytest.approx(min(cost))
    with pytest.raises(ValueError): F.pick_threshold(np.zeros(5), np.ones(5))
    with pytest.raises(ValueError): F.pick_threshold(y, s, 'accuracy')


def test_make_pipeline_bad_input():
    with pytest.raises(ValueError, match='Unknown method'): F.make_pipeline('adasyn')
    with pytest.raises(ValueError, match='pos_weight'): F.make_pipeline('weighted')
    d = small_data(3000, 0.05)
    p = F.fit_method('weighted', d.X, d.y, xgb_params=TINY)
    assert p.steps[-1][1].get_params()['scale_pos_weight'] == pytest.approx(19, rel=0.01)


def test_cv_summary_interval_contains_mean():
    cv = pd.DataFrame(dict(fold=np.repeat(np.arange(4), 2), method=['a', 'b']*4, n_train=80, n_test=20,
                           ap=[.5, .6, .55, .62, .52, .58, .57, .61], cost_per_1000=np.arange(8.)))
    s = F.cv_summary(cv, metrics=('ap', 'cost_per_1000'))
    assert (s.ap_lo <= s.ap_mean).all() and (s.ap_mean <= s.ap_hi).all() and (s.ap_hi <= 1).all()
    with pytest.raises(ValueError): F.cv_summary(cv[cv.fold == 0], metrics=('ap',))


# --- the study runner --------------------------------------------------------------------------------------------

def test_accuracy_lies_uses_one_split_for_both_models():
    "The majority classifier and plain XGBoost are scored on the same test rows (same positives), and only XGBoost finds any."
    d = small_data(4000, 0.03)
    st = F.FraudStudy(quick_cfg(xgb=dict(TINY, n_jobs=1)), 0, [d], DataInfo('test', 'synthetic'))
    a = F.accuracy_lies(st).accuracy['test']
    assert a['majority']['tp'] + a['majority']['fn'] == a['baseline']['tp'] + a['baseline']['fn'] == round(0.3*d.y.sum())
    assert a['majority']['recall'] == 0 and a['majority']['accuracy'] == pytest.approx(1 - d.y.mean(), abs=1e-3)
    assert st.steps == ['accuracy_lies']


def test_results_need_every_step():
    st = F.FraudStudy(quick_cfg(), 0, [small_data(2000, 0.05)], DataInfo('test', 'synthetic'), steps=['accuracy_lies'])
    with pytest.raises(ValueError, match='reproduce_seed'): F.fraud_results(st)


def test_runner_quick_json_holds_the_table(tmp_path):
    # how long the quick profile takes is a benchmark's question (timings differ between machines), not a test's
    res = get_study('fraud-resampling').run('quick', seed=0)
    assert res.timings['total'] > 0
    assert isinstance(res, Results) and res.profile == 'quick' and res.paper == F.PAPER
    assert res.config['steps'] == [f.__name__ for f in F.FRAUD_STEPS] and res.config['profile'] == 'quick'
    back = json.loads(res.save(tmp_path/'fraud.json').read_text())
    rows = back['table']
    assert all(set(r) == {'quantity', 'paper', 'ours', 'ci', 'note'} for r in rows)       # the shared schema
    assert {'baseline', 'smote', 'under', 'weighted'} <= {r['quantity'].split(':')[0].split(', ')[-1] for r in rows}
    for r in rows:
        if r['ci'] is not None: assert r['ci'][0] - 1e-9 <= r['ours'] <= r['ci'][1] + 1e-9, r   # intervals hold their means
        if r['quantity'].endswith('(%)'): assert 0 <= r['ours'] <= 100, r                     # rates in percent
    paper = [r for r in rows if r['paper'] is not None]
    assert len(paper) == 2 * len(F.PAPER) * len(back['config']['datasets']) and all(r['paper'] > 1 for r in paper)
    cc = back['config']['creditcard_available']
    assert all((k in back['metrics']) == cc for k in F.PAPER) # paper keys are filled only from the real creditcard.csv
    if not cc:
        assert F.SIMULATED in back['data']['name'] and back['data']['source'] == 'synthetic'
        assert all('not comparable' in r['note'] for r in paper)


def test_xgboost_threads_follow_the_package_policy():
    "XGBoost gets `robustml.core.omp_threads`: one thread under quick, all cores otherwise, one when OpenMP was loaded busy first."
    import os, subprocess, sys
    code = "import sys; {pre}; import robustml.fraud as F, robustml.core as C; print(F.fraud_config('{p}').xgb['n_jobs'], C._OMP_BUSY)"
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'ROBUSTML_THREADS')}
    run = lambda pre, p='course', **extra: subprocess.run([sys.executable, '-c', code.format(pre=pre, p=p)], env={**env, **extra},
                                                         capture_output=True, text=True, check=True).stdout.split()
    cores = str(os.cpu_count() or 1)
    assert run('pass') == [cores, 'False'] and run('pass', 'quick') == ['1', 'False']
    assert run('import torch', OMP_WAIT_POLICY='PASSIVE') == [cores, 'False']
    late = run('import torch')
    assert late == (['1', 'True'] if late[1] == 'True' else [cores, 'False'])   # some torch builds map no libgomp


def test_smote_before_split_counts_its_synthetic_test_positives():
    "SMOTE before the split: the share of synthetic rows among the test positives is what the resampling implies (nearly all)."
    d = small_data()
    t = F.smote_before_split(d, TINY)
    w, r = t.iloc[0], t.iloc[1]
    n_pos, n_neg = int(d.y.sum()), int((1 - d.y).sum())
    assert r.synthetic_share == 0 and r.test_pos_rate == pytest.approx(d.y.mean(), abs=0.002)
    assert w.test_pos_rate == pytest.approx(0.5, abs=0.001)          # SMOTE to 1:1, then a stratified split
    assert w.synthetic_share == pytest.approx(1 - n_pos / n_neg, abs=0.02)  # synthetic positives / all positives after SMOTE


def test_findings_follow_the_intervals():
    "Each claim gets a verdict from the run; the paper's numbers are 'not testable here' without creditcard.csv."
    res_st = F.fraud_setup(F.fraud_config("quick"), 0)
    for step in F.FRAUD_STEPS: step(res_st)
    f = F.fraud_findings(res_st)
    assert len(f) == 6
    if 'creditcard' not in res_st.seed_runs: assert all(x['verdict'] == 'not testable here' for x in f[:3])
    for x in f[3:5]:
        for part in x['verdict'].split('; '):
            assert part.split(': ')[-1] in ('reproduced', 'not reproduced', 'no difference shown'), x['verdict']
