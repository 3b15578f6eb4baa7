"Tests of robustml.cifar.time: times to a target, the record lookup, the seed recipe's splits and the runner (quick)."
import json

import pytest

from robustml.cifar import full as cf, time as ct
from robustml.core import DataInfo, Results
from robustml.studies import get_study
from robustml.cli import main


def _traj(*rows, phase=None):
    return [dict(train_s=t, val_clean=c, val_pgd10=r, **({} if phase is None else {'phase': p}))
            for (t, c, r), p in zip(rows, phase or [None] * len(rows))]


def test_time_to_reads_the_first_epoch_that_reaches_the_target():
    tr = _traj((10, 70, 40), (20, 79, 45), (30, 80, 50))
    assert ct.time_to(tr, 78) == 20 and ct.time_to(tr, 78, 48) == 30
    assert ct.time_to(tr, 81) is None and ct.time_to(tr, 0) == 10
    seed = _traj((5, 85, 0), (50, 78, 20), phase=['standard', 'adversarial'])
    assert ct.time_to(seed, 80) == 5 and ct.time_to(seed, 80, phase='adversarial') is None


def test_time_to_target_gives_a_ratio_or_a_bound_never_both():
    best = _traj((10, 70, 40), (20, 80, 50))
    seed = _traj((5, 85, 0), (40, 79, 30), (80, 79, 31), phase=['standard', 'adversarial', 'adversarial'])
    r = ct.time_to_target(best, seed, clean=78, robust=47)
    assert (r['best_s_clean'], r['seed_s_clean'], r['ratio_clean'], r['ratio_clean_below']) == (20, 40, 0.5, None)
    assert (r['seed_s_both'], r['ratio_both'], r['ratio_both_below']) == (None, None, 0.25)  # 20 s / all 80 s
    r = ct.time_to_target(_traj((10, 10, 1)), seed, clean=78, robust=47)  # the best recipe never gets there
    assert r['ratio_clean'] is None and r['ratio_clean_below'] is None


def test_seed_recipe_profiles_follow_the_seed():
    p = ct.time_config('paper')
    assert (p.width, p.epochs_std, p.epochs_adv, p.step_size, p.batch_size) == (1., 10, 10, 5, 64)
    assert p.full == cf.full_config('paper')   # the best recipe's sizes of the same profile
    q = ct.time_config('quick')
    assert q.epochs_std + q.epochs_adv < p.epochs_std + p.epochs_adv and q.profile == 'quick'
    with pytest.raises(ValueError): ct.time_config('huge')


def test_seed_recipe_validates_on_the_best_recipes_images(data_env):
    (a, info), b = ct.load_time_data(ct.time_config('quick')), cf.load_full_data(cf.full_config('quick'))
    for k in ('x_train', 'y_train', 'x_val', 'y_val', 'x_test', 'y_test'):
        assert (getattr(a, k) == getattr(b, k)).all(), k
    assert info.source == b.info.source


def test_unknown_recipe_is_refused(data_env):
    st = ct.time_setup(ct.time_config('quick'))
    with pytest.raises(ValueError, match='recipe must be one of'): ct.train_recipe(st, 'bogus')
    assert set(st.runs) == set(ct.RECIPES) and all(r.net is None for r in st.runs.values())   # nothing trained


def test_best_record_is_read_only_when_it_matches(data_env, tmp_path, monkeypatch):
    made = []
    def fake_run(profile, seed=0, device=None):
        made.append((profile, seed))
        return Results('cifar-full', profile, {'name': 'cifar10', 'source': 'synthetic'}, seed=seed,
                       metrics={'trajectory': [{'train_s': 1., 'val_clean': 1., 'val_pgd10': 1.}]})
    monkeypatch.setattr(ct, 'run_cifar_full', fake_run)
    monkeypatch.setenv('ROBUSTML_RESULTS', str(tmp_path))
    rec = ct.best_recipe_record('quick', seed=3)                   # none there: trained, then saved
    assert made == [('quick', 3)] and (tmp_path/'cifar-full.json').is_file()
    assert ct.best_recipe_record('quick', seed=3).created == rec.created and len(made) == 1   # read back
    ct.best_recipe_record('quick', seed=4)                          # another seed: trained again
    rec = Results.load(tmp_path/'cifar-full.json'); rec.data.source = 'real'; rec.save(tmp_path/'cifar-full.json')
    ct.best_recipe_record('quick', seed=4)                          # made on other data than this run would use: trained
    assert made[1:] == [('quick', 4), ('quick', 4)]


def test_runner_quick_synthetic(data_env, tmp_path, monkeypatch):
    "Plumbing: the record holds both trajectories and every column; under quick the models sit near chance."
    monkeypatch.setenv('ROBUSTML_RESULTS', str(tmp_path))
    study = get_study('cifar-time')
    res = study.run('quick', seed=0)
    m = res.metrics
    assert res.profile == 'quick' and res.data.source == 'synthetic' and (tmp_path/'cifar-full.json').is_file()
    cfg = ct.time_config('quick')
    assert len(m['seed_recipe_trajectory']) == cfg.epochs_std + cfg.epochs_adv
    assert len(m['best_trajectory']) == cf.full_config('quick').epochs
    for k in ('clean', 'seed_fgsm', 'fgsm5', 'pgd20_5', 'fgsm8', 'pgd20_8'): assert 0 <= m[f'seed_recipe_{k}'] <= 100
    for tag in ('clean', 'both'): assert m[f'ratio_{tag}'] is None or m[f'ratio_{tag}_below'] is None
    assert cfg.epochs_std < m['seed_recipe_selected_epoch'] <= cfg.epochs_std + cfg.epochs_adv
    json.dumps(res.to_dict(), allow_nan=False)


def test_cli_hands_its_out_folder_to_cifar_time(data_env, tmp_path, monkeypatch, capsys):
    "`reproduce cifar-time --out DIR` reuses DIR's cifar-full record (same profile and seed) and looks for it in DIR."
    monkeypatch.delenv('ROBUSTML_RESULTS', raising=False)
    out = tmp_path/'o'
    Results('cifar-full', 'quick', DataInfo('cifar10', 'synthetic'), seed=0).save(out/'cifar-full.json')
    seen = []
    def look(*a, **k):
        seen.append(ct.results_dir()); raise RuntimeError('stop here')
    monkeypatch.setattr(ct, 'best_recipe_record', look)
    assert main(['reproduce', 'cifar-time', '--profile', 'quick', '--out', str(out)]) == 1
    io = capsys.readouterr()
    assert seen == [out] and 'stop here' in io.err and 'reusing' in io.out   # cifar-full was not run again
    assert ct.results_dir() == ct.Path('results')   # restored afterwards

