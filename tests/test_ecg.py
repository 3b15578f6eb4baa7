"Tests of robustml.ecg (chapter 3, smoothed adversarial ECGs): config, loader, attacks, mask, smoothness, seeds, runner JSON, bad input."
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustml import ecg
from robustml.core import Results
from robustml.studies import get_study
from robustml.datasets import DataUnavailable


@pytest.fixture(scope='module')
def small():
    "A few short synthetic records (some padded) at 2,400 samples and a small seeded, untrained ECGNet."
    rec = ecg.synthetic_ecg(24, length=2400, min_length=1200, seed=5)
    x, m = ecg.pad_records(rec.signals, 2400)
    y = torch.as_tensor(rec.labels)
    torch.manual_seed(0)
    model = ecg.ECGNet(4, width=12, dilations=(1, 2, 4)).eval()
    return x, m, y, model


@pytest.fixture(scope='module')
def attacked(small):
    x, m, y, model = small
    torch.manual_seed(0)
    with ecg.torch_threads(1):  # one thread: much faster on a shared CPU (see the chapter)
        xp, rps_p = ecg.attack_batches(model, x, y, m, 'pgd')
        xs, rps_s = ecg.attack_batches(model, x, y, m, 'smooth', init=xp)
    return xp, xs, rps_p, rps_s


def test_smoothed_within_eps_and_smoother(small, attacked):
    x, m, y, model = small
    xp, xs, rps_p, rps_s = attacked
    dp, ds = xp - x, xs - x
    assert dp.abs().max() <= ecg.EPS + 1e-3 and ds.abs().max() <= ecg.EPS + 1e-3
    assert ds.abs().max() > 0.1 * ecg.EPS  # the smoothed attack did perturb
    hp, hs = ecg.hf_energy_fraction(dp).nanmean(), ecg.hf_energy_fraction(ds).nanmean()
    tp, ts = ecg.total_variation(dp, m).mean(), ecg.total_variation(ds, m).mean()
    assert hs < 0.2 * hp, (hp, hs)  # far less energy above 25 Hz
    assert ts < 0.3 * tp, (tp, ts)  # far smaller sample-to-sample changes
    assert rps_p > 0 and rps_s > 0


def test_mask_leaves_padding_untouched(small, attacked):
    x, m, y, model = small
    assert (m == 0).any(), 'the fixture must contain padded records'
    for xa in attacked[:2]:
        assert torch.equal(xa[m == 0], x[m == 0])  # exactly zero change in the padding
    # and the collate-and-perturb samples stay in the band and off the padding: their predictions are well defined
    fr = ecg.collate_and_perturb(model, x[:2], y[:2], (attacked[1] - x)[:2], m[:2], n_samples=4)
    assert fr.shape == (2,) and ((fr >= 0) & (fr <= 1)).all()


def test_model_ignores_padding():
    rec = ecg.synthetic_ecg(2, length=1800, min_length=1800, seed=2)
    net = ecg.ECGNet(4, width=8, dilations=(1, 2)).eval()
    x = torch.from_numpy(rec.signals[0][None, None].copy())
    with torch.no_grad(): assert torch.allclose(net(x), net(F.pad(x, (0, 1200))), atol=1e-4)


def test_smoothness_measures_rank_square_and_smooth_waves():
    t = torch.arange(3000.)
    sq = ecg.EPS * torch.sign(torch.sin(2 * np.pi * 50 * t / ecg.FS))[None, None]
    sm = ecg.EPS * torch.sin(2 * np.pi * 1.5 * t / ecg.FS)[None, None]
    assert ecg.hf_energy_fraction(sq)[0] > 0.5 > ecg.hf_energy_fraction(sm)[0]
    assert ecg.total_variation(sq)[0] > 10 * ecg.total_variation(sm)[0]


def test_split_is_by_record_and_stratified():
    y = np.repeat([0, 1, 2, 3], [150, 50, 70, 30])
    sp = ecg.split_records(y, seed=3)
    allidx = np.concatenate(list(sp.values()))
    assert len(allidx) == len(np.unique(allidx)) == 300
    for k, frac in zip(('train', 'val', 'test'), (0.6, 0.2, 0.2)):
        assert np.allclose(np.bincount(y[sp[k]], minlength=4), frac * np.bincount(y), atol=1)


def test_synthetic_af_is_irregular():
    rec = ecg.synthetic_ecg(16, length=6000, min_length=6000, seed=0)
    assert rec.source == 'synthetic' and rec.fs == 300. and rec.gain == 1000.
    def cv(s):
        thr = np.percentile(s, 98) * 0.6
        pk = np.where((s[1:-1] > thr) & (s[1:-1] >= s[:-2]) & (s[1:-1] > s[2:]))[0]
        pk = pk[np.concatenate([[True], np.diff(pk) > 75])]
        rr = np.diff(pk); return rr.std() / rr.mean()
    c = np.array([cv(s) for s in rec.signals])
    assert np.median(c[rec.labels == 1]) > 2 * np.median(c[rec.labels == 0])


@pytest.mark.parametrize('call', [
    lambda: ecg.random_crops(torch.zeros(2, 1, 10), 11),
    lambda: ecg.random_crops(torch.zeros(2, 10), 5),
    lambda: ecg.split_records(np.zeros(10), (0.5, 0.6, 0.1)),
    lambda: ecg.pad_records([np.ones(3)], 0),
    lambda: ecg.synthetic_ecg(0),
    lambda: ecg.ECGNet(kernel=4),
    lambda: ecg.ECGNet()(torch.zeros(2, 3000)),
    lambda: ecg.attack_batches(ecg.ECGNet(), torch.zeros(1, 1, 100), torch.zeros(1, dtype=torch.long), torch.ones(1, 1, 100), 'fgsm'),
    lambda: ecg.collate_and_perturb(ecg.ECGNet(), torch.zeros(1, 1, 100), torch.zeros(1, dtype=torch.long),
                                    torch.zeros(1, 1, 99), torch.ones(1, 1, 100)),
    lambda: ecg.collate_and_perturb(ecg.ECGNet(), torch.zeros(1, 1, 100), torch.zeros(1, dtype=torch.long),
                                    torch.zeros(1, 1, 100), torch.ones(1, 1, 100), noise_std=0.),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError): call()


def _no_data(monkeypatch, tmp_path):
    monkeypatch.delenv('ROBUSTML_DATA', raising=False)
    monkeypatch.setenv('ROBUSTML_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('ROBUSTML_OFFLINE', '1')


@pytest.mark.parametrize('profile', ['course', 'paper'])
def test_without_data_only_quick_falls_back(monkeypatch, tmp_path, profile):
    "Outside `quick`, missing data stop the loader with DataUnavailable (which says where it looked); quick uses the stand-in."
    _no_data(monkeypatch, tmp_path)
    with pytest.raises(DataUnavailable, match='cinc2017'): ecg.load_ecg_data(ecg.ecg_config(profile))
    with pytest.raises(DataUnavailable): ecg.ecg_setup(ecg.ecg_config(profile))
    rec, info = ecg.load_ecg_data(ecg.ecg_config('quick'), seed=1)
    assert info.source == 'synthetic' and rec.source == 'synthetic' and len(rec) == ecg.ecg_config('quick').n_synthetic


def test_config_carries_the_profile(monkeypatch):
    "The profile is resolved once, into the config; the functions below take the config, never a profile name."
    monkeypatch.setenv('ROBUSTML_PROFILE', 'course')
    cfg = ecg.ecg_config()
    assert isinstance(cfg, ecg.ECGConfig) and cfg.profile == 'course' and cfg.n_seeds >= 2
    assert ecg.ecg_config('quick').profile == 'quick' and ecg.ecg_config('paper').length == 18000
    with pytest.raises(Exception): cfg.length = 10          # frozen: a run cannot change its settings half-way
    with pytest.raises(TypeError, match='ECGConfig'): ecg.ecg_setup('quick')
    with pytest.raises(ValueError): ecg.ecg_config('fast')


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    "The quick runner on the labelled synthetic stand-in (no data needed), and its JSON record."
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp('ecg')
    mp.delenv('ROBUSTML_DATA', raising=False); mp.setenv('ROBUSTML_CACHE', str(tmp / 'cache')); mp.setenv('ROBUSTML_OFFLINE', '1')
    try:
        res = get_study('ecg-smooth').run('quick', seed=0)
        path = res.save(tmp / 'ecg-smooth.json')
        yield res, path
    finally: mp.undo()


def test_seeds_repeat_from_scratch(quick_run, monkeypatch, tmp_path):
    "Each seed of the headline equals a from-scratch run of the same steps with that seed (the main run reused for seed 0)."
    _no_data(monkeypatch, tmp_path)
    res, _ = quick_run
    cfg = ecg.ecg_config('quick')
    rows = res.metrics['seeds']
    assert [r['seed'] for r in rows] == list(range(cfg.n_seeds))
    for r in rows:
        assert ecg.seed_headline(cfg, r['seed']) == r   # same process, same thread setting: identical, not just close
    P = res.metrics['pooled']   # the headline pools the counts of all seeds
    for key, k, n in (('pgd', 'pgd_flipped', 'attack_records'), ('smooth', 'smooth_flipped', 'attack_records'),
                      ('target_smooth', 'target_smooth_hits', 'target_records'), ('cp_records', 'cp_records_all', 'cp_records')):
        assert P[key]['k'] == sum(r[k] for r in rows) and P[key]['n'] == sum(r[n] for r in rows)
        if P[key]['n']: lo, hi = P[key]['ci']; assert lo <= P[key]['rate'] <= hi
    # per-sample rates: counts pooled, the interval resamples records (a record's samples are not independent)
    assert P['cp_samples']['k'] == sum(r['cp_samples_adv'] for r in rows) and P['cp_samples']['n'] == sum(r['cp_samples_total'] for r in rows)
    assert sum(len(r['cp_adv_fracs']) for r in rows) == P['cp_records']['n']
    if P['cp_samples']['n']: lo, hi = P['cp_samples']['ci']; assert lo <= P['cp_samples']['rate'] <= hi


def test_runner_json_holds_table(quick_run):
    "Plumbing: the quick runner's record round-trips through JSON with its table (quick's attack success can be 0)."
    res, path = quick_run
    assert isinstance(res, Results) and res.data.source == 'synthetic' and res.profile == 'quick'
    d = json.loads(path.read_text())
    rows = {r['quantity']: r for r in d['table']}
    for r in d['table']:   # the shared schema, numbers (or None) in paper / ours, so results_frame can format them
        assert set(r) == {'quantity', 'paper', 'ours', 'ci', 'note'}
        assert all(r[k] is None or isinstance(r[k], (int, float)) for k in ('paper', 'ours')), r
    for q in ('challenge F1, vs the authors (%)', 'challenge F1, vs the 2017 winners (%)', 'PGD success, per record (%)',
              'smoothed attack success, per record (%)', 'AF -> Normal, targeted smoothed (%)', 'energy above 25 Hz, PGD (%)',
              'collate & perturb: still adversarial, per record (%)', 'collate & perturb: still adversarial, per sample (%)',
              'clinicians tell the smoothed example (%)'):
        assert q in rows, q
    m, P = d['metrics'], d['metrics']['pooled']
    # the paper's settings, recorded with the run
    assert (m['eps_raw'], m['pgd_steps'], m['smooth_steps'], m['pgd_step_raw'], m['noise_std']) == (10, 20, 40, 1, 5)
    # the headline rows hold the counts pooled over seeds, with Wilson intervals on the pooled counts
    assert rows['PGD success, per record (%)']['ours'] == round(100 * P['pgd']['k'] / P['pgd']['n'], 1)
    assert rows['smoothed attack success, per record (%)']['ci'] == [round(100 * v, 1) for v in ecg.wilson_ci(P['smooth']['k'], P['smooth']['n'])]
    assert rows['challenge F1, vs the authors (%)']['ours'] == round(100 * P['cinc_f1']['rate'], 1)
    assert P['cinc_f1']['n'] == sum(len(r['test_y']) for r in m['seeds'])
    for q in ('challenge F1, vs the authors (%)', 'PGD success, per record (%)', 'smoothed attack success, per record (%)'):
        lo, hi = rows[q]['ci']; assert 0 <= lo <= rows[q]['ours'] <= hi <= 100, rows[q]
    assert 0 <= m['pgd_success'] <= 1 and 0 <= m['smooth_success'] <= 1
    assert m['smooth_linf'] <= ecg.EPS + 1e-3 and m['pgd_padding_max'] == 0 and m['smooth_padding_max'] == 0
    assert m['smooth_hf_frac'] < m['pgd_hf_frac'] and m['smooth_tv'] < m['pgd_tv']
    lo, hi = m['pgd_success_ci']; assert lo <= m['pgd_success'] <= hi   # seed 0's own Wilson interval
    assert m['pgd_flipped'] == round(m['pgd_success'] * m['attack_records'])
    # the targeted case counts AF records of the pool made to read as Normal
    assert 0 <= m['target_smooth_hits'] <= m['target_records'] and m['target_untargeted_flipped'] <= m['target_records']
    # collate and perturb: a record counts when all its samples stay adversarial; samples are counted one by one
    assert m['cp_records_all'] <= m.get('cp_records_half', 0) <= m['cp_records'] or m['cp_records'] == 0
    assert m['cp_samples_total'] == m['cp_records'] * m['cp_samples_per_record'] and m['cp_samples_adv'] <= m['cp_samples_total']
    # the AutoAttack-style row: counted on the PGD pool, each record once, by the first stage that flips it
    assert 'AutoAttack-style success (%)' in rows and m['aa_version'] == 'course'
    assert sum(m['aa_by_stage'].values()) == round(m['aa_success'] * m['attack_records'])
    lo, hi = m['aa_success_ci']; assert lo <= m['aa_success'] <= hi
    # the paper column holds Han et al.'s published numbers, in percent, beside ours under the same keys
    assert d['paper']['smooth_success_pct'] == 74.0 and rows['smoothed attack success, per record (%)']['paper'] == 74.0
    assert m['smooth_success_pct'] == rows['smoothed attack success, per record (%)']['ours']
    assert rows['collate & perturb: still adversarial, per record (%)']['paper'] == 87.6
    assert rows['clinicians tell the smoothed example (%)']['ours'] is None and '124/200' in rows['clinicians tell the smoothed example (%)']['note']
    assert len(m['eps_sweep']) == len(d['config']['sweep_eps'])
    for r in m['eps_sweep']:   # each budget's success rates carry Wilson intervals that hold them
        for k in ('pgd', 'smooth'): assert r[f'{k}_ci'][0] <= r[f'{k}_success'] <= r[f'{k}_ci'][1]
    assert Results.load(path).table == res.to_dict()['table']


def test_sweep_gives_the_same_flips_with_one_or_two_workers(small):
    "The sweep's tasks are cut the same way whatever the workers, so two processes give the serial numbers exactly."
    from functools import partial
    from robustml.core import parallel_map
    x, m, y, model = small
    task = partial(ecg._sweep_task, model=model, x=x[:8], y=y[:8], mask=m[:8], seed=0, threads=1)
    tasks = [(3., c) for c in ecg.record_chunks(8)]
    one, two = parallel_map(task, tasks, n_jobs=1), parallel_map(task, tasks, n_jobs=2)
    assert all(np.array_equal(u, v) for a, b in zip(one, two) for u, v in zip(a, b))
    assert all(a[1].dtype == bool and len(a[0]) == len(c) for a, (_, c) in zip(one, tasks))

def test_autoattack_chunks_give_the_same_result_with_one_or_two_workers(small):
    "AutoAttack on fixed chunks, each seeded alike: two processes reproduce the serial run record for record."
    from functools import partial
    from robustml.core import parallel_map
    x, m, y, model = small
    task = partial(ecg._aa_task, model=model, x=x[:6], y=y[:6], mask=m[:6], version='course', seed=0, threads=1)
    chunks = ecg.record_chunks(6)
    one, two = parallel_map(task, chunks, n_jobs=1), parallel_map(task, chunks, n_jobs=2)
    for a, b, c in zip(one, two, chunks):
        assert np.array_equal(a.broken_by, b.broken_by) and np.array_equal(a.clean, b.clean) and a.n == len(c)

def test_targeted_attack_moves_toward_the_target(small):
    "Targeted PGD and the targeted smoothed attack raise the target class's probability, within eps and off the padding."
    x, m, y, model = small
    t = torch.zeros_like(y)   # every record toward class 0 (Normal)
    torch.manual_seed(0)
    with ecg.torch_threads(1):
        xp, _ = ecg.attack_batches(model, x, t, m, 'pgd', eps=50., alpha=5., targeted=True)
        xs, _ = ecg.attack_batches(model, x, t, m, 'smooth', eps=50., alpha=5., init=xp, targeted=True)
    with torch.no_grad():
        p0, pp, ps = (F.softmax(model(z), 1)[:, 0] for z in (x, xp, xs))
    assert pp.mean() > p0.mean() and ps.mean() > p0.mean(), (p0.mean(), pp.mean(), ps.mean())
    for xa in (xp, xs):
        assert (xa - x).abs().max() <= 50. + 1e-3 and torch.equal(xa[m == 0], x[m == 0])


def test_pooled_rate_verdict_and_clinicians():
    "Pooled counts give Wilson intervals on the sums; verdicts come from the interval; the clinicians' 62% is above chance."
    r = ecg.pooled_rate([{'k': 3, 'n': 10}, {'k': 5, 'n': 10}, {'k': 0, 'n': 0}], 'k', 'n')
    assert (r['k'], r['n'], r['rate']) == (8, 20, 0.4) and r['ci'] == list(ecg.wilson_ci(8, 20))
    assert ecg.pooled_rate([{'k': 0, 'n': 0}], 'k', 'n') == {'k': 0, 'n': 0, 'rate': None, 'ci': None}
    assert ecg.verdict(74., [60., 80.]) == 'reproduced' and ecg.verdict(74., [10., 30.]) == 'not reproduced (ours lower)'
    assert ecg.verdict(87.6, [88., 99.]) == 'not reproduced (ours higher)' and ecg.verdict(74., None) == 'not testable here'
    c = {r['who']: r for r in ecg.clinician_tests()}
    both = c['smoothed, both clinicians']
    assert (both['right'], both['judged']) == (124, 200) and both['p'] < 0.001
    assert round(100 * both['ci'][0]) == 55 and round(100 * both['ci'][1]) == 68   # above chance: 50% is outside
    assert c['smoothed, clinician 2']['p'] > 0.05 and c['smoothed, clinician 2']['ci'][0] < 0.5   # one reader alone: not shown


def test_settings_table_names_the_deviations():
    "The attacks follow the paper in every profile; the data, the model and (below paper) the noise samples are named as deviations."
    for p in ('quick', 'course', 'paper'):
        t = ecg.settings_table(ecg.ecg_config(p)).set_index('setting')['as in paper']
        assert t['PGD'] == t['smoothed attack'] == t['targeted case'] == 'yes' and t['training data'] == t['model'] == 'no'
    assert ecg.settings_table(ecg.ecg_config('course')).set_index('setting').loc['collate and perturb', 'as in paper'] == 'no'
    assert ecg.settings_table(ecg.ecg_config('paper')).set_index('setting').loc['collate and perturb', 'as in paper'] == 'yes'
    assert (ecg.STEPS, ecg.SMOOTH_STEPS, ecg.EPS, ecg.ALPHA, ecg.NOISE_STD) == (20, 40, 10., 1., 5.)


def test_quiz_pairs_clean_and_smoothed_windows(small, attacked):
    "The ECG quiz holds clean windows (real) and their smoothed adversarial versions (fake), in mV, each fake within eps of a real."
    x, m, y, model = small
    st = ecg.ECGStudy(ecg.ecg_config('quick'), 0)
    st.attack = {'x': x, 'x_smooth': attacked[1], 'pool': np.arange(len(x)), 'flip_smooth': torch.ones(len(x), dtype=torch.bool)}
    q = ecg.ecg_quiz(st, n=6, start=1., seconds=2., seed=3)
    assert len(q) == 6 and q.is_fake.sum() == 3
    clean = (x[:, 0, 300:900] / ecg.GAIN).numpy()
    for item, fake, src in zip(q.items, q.is_fake, q.source):
        assert item.shape == (600,)
        d = np.abs(item - clean[src]).max()
        assert (d <= ecg.EPS / ecg.GAIN + 1e-6) if fake else d == 0
    with pytest.raises(ValueError, match='runs past'): ecg.ecg_quiz(st, start=7., seconds=2.)
