"Tests of robustml.cifar.common and robustml.cifar.fgsm (chapter 1): the seed's model and faithful-but-wrong FGSM, the seed's loop, profiles, data, the runner."
import json

import numpy as np
import pytest

from robustml.datasets.images import synthetic_images
import torch

from robustml import datasets as rdata
from robustml.cifar import common as cmn, fgsm as ch1
from robustml.attacks import Normalize, fgsm
from robustml.core import Results
from robustml.studies import get_study


def test_seed_cnn_shapes_and_widths():
    net = ch1.seed_cnn()
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    # the seed's layer sizes: 4 conv blocks 64-128-256-512, then 2048-1024-512-10
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512]
    lins = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in lins] == [(2048, 1024), (1024, 512), (512, 10)]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in net) == 2
    small = ch1.seed_cnn(0.25)
    assert [c.out_channels for c in small if isinstance(c, torch.nn.Conv2d)] == [16, 32, 64, 128]
    with pytest.raises(ValueError): ch1.seed_cnn(0)
    with pytest.raises(ValueError): ch1.seed_cnn(-1.)


def test_pixel_model_equals_seed_network_on_normalised_inputs():
    torch.manual_seed(0)
    net = ch1.seed_cnn(0.125).eval()
    m = cmn.pixel_model(net)
    assert isinstance(m[0], Normalize) and m[1] is net
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(m(x), net(ch1.normalise(x)), atol=1e-5)
    assert torch.allclose(ch1.denormalise(ch1.normalise(x)), x, atol=1e-6)


def test_seed_fgsm_is_faithful_including_the_clamp_defect():
    torch.manual_seed(0)
    net = ch1.seed_cnn(0.125).eval()
    x = torch.rand(16, 3, 32, 32); y = torch.randint(0, 10, (16,))
    xn = ch1.normalise(x)
    xa = ch1.seed_fgsm(net, xn, y, 0.1)
    assert xa.min() >= 0 and xa.max() <= 1                     # clamped in *normalised* space
    assert not xa.requires_grad and torch.equal(xn, ch1.normalise(x))   # input untouched
    # eps = 0: only the clamp remains, and it already moves the image
    x0 = ch1.seed_fgsm(net, xn, y, 0.)
    assert torch.equal(x0, xn.clamp(0, 1))
    assert (ch1.denormalise(x0) - x).abs().max() > 0.1
    # away from the clamp the step is exactly eps in normalised units
    inside = (xn > 0.2) & (xn < 0.8)
    step = (xa - xn)[inside].abs()
    assert ((step - 0.1).abs() < 1e-5).float().mean() > 0.99
    with pytest.raises(ValueError): ch1.seed_fgsm(net, xn, y, -0.1)


def test_seed_attack_needs_pixel_model_and_matches_seed_fgsm():
    torch.manual_seed(0)
    net = ch1.seed_cnn(0.125)
    m = cmn.pixel_model(net).train()
    x = torch.rand(8, 3, 32, 32); y = torch.randint(0, 10, (8,))
    xa = ch1.seed_attack(m, x, y)
    assert m.training                                           # mode restored
    with torch.no_grad():
        ref = ch1.seed_fgsm(net.eval(), ch1.normalise(x), y)
        assert torch.allclose(m.eval()(xa), net(ref), atol=1e-4)
    # the seed's example leaves the pixel range or sits at the channel mean: no pixel is darker than the mean
    mean = torch.tensor(cmn.CIFAR_MEAN).view(1, 3, 1, 1)
    assert bool((xa >= mean - 1e-5).all())
    with pytest.raises(ValueError): ch1.seed_attack(net, x, y)


def test_effective_eps_is_about_5_over_255():
    per_channel = [cmn.SEED_EPS * s * 255 for s in cmn.CIFAR_STD]
    assert all(5 <= v <= 5.2 for v in per_channel)
    assert cmn.EPS5 == 5 / 255 and cmn.EPS8 == 8 / 255


def test_seed_adv_train_mode_bug_and_switches():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8); y = torch.randint(0, 10, (96,))
    m = cmn.pixel_model(ch1.seed_cnn(0.125))
    calls = []
    h = ch1.seed_adv_train(m, (x, y), epochs=3, batch_size=32, step_size=1, monitor=lambda mm: calls.append(mm.training) or {'v': len(calls)},
                             progress_bar=False)
    assert h.mode == ['train', 'eval', 'eval']                 # the seed's bug
    assert calls == [False, False, False] and len(h.states) == 3 and len(h.time) == 3
    assert ch1.select_epoch(h, 'v') == 2
    with pytest.raises(ValueError): ch1.select_epoch(h, 'nope')
    assert h.lr == pytest.approx([1e-4, 1e-5, 1e-6])            # StepLR(1, 0.1)
    h2 = ch1.seed_adv_train(cmn.pixel_model(ch1.seed_cnn(0.125)), (x, y), epochs=2, batch_size=32, space='pixel',
                              mode_bug=False, progress_bar=False)
    assert h2.mode == ['train', 'train']
    assert all(np.isfinite(h2.train_loss))
    for bad in (dict(space='rgb'), dict(epochs=0), dict(clean_weight=1.5)):
        kw = dict(epochs=1, progress_bar=False); kw.update(bad)
        with pytest.raises(ValueError): ch1.seed_adv_train(cmn.pixel_model(ch1.seed_cnn(0.125)), (x, y), **kw)
    with pytest.raises(ValueError): ch1.seed_adv_train(ch1.seed_cnn(0.125), (x, y), epochs=1)


def test_profiles():
    q, c, p = (ch1.cifar_config(n) for n in ('quick', 'course', 'paper'))
    assert q.n_train < c.n_train < p.n_train and p.width == 1 and p.batch_size == 64
    assert p.epochs_std == 10 and p.epochs_adv == 10 and p.step_size == 5     # the seed's settings
    for cfg in (q, c, p):
        assert cfg.n_strong <= cfg.n_pgd <= cfg.n_test and cfg.n_guard <= cfg.n_val
    assert 'SCALED-DOWN' in ch1.describe_config(c) and 'SCALED-DOWN' not in ch1.describe_config(p)
    with pytest.raises(ValueError): ch1.cifar_config('huge')


def test_data_synthetic_fallback_and_unavailable(data_env):
    d = cmn.load_chapter_data(ch1.cifar_config('quick'))
    assert d.info.source == 'synthetic' and 'synthetic' in str(d.info).lower()
    assert len(d.y_train) == ch1.cifar_config('quick').n_train and d.x_train.dtype == torch.uint8
    with pytest.raises(rdata.DataUnavailable): cmn.load_chapter_data(ch1.cifar_config('course'))


def test_data_real_splits_are_disjoint(shared_data):
    cfg = ch1.cifar_config('quick')
    d = cmn.load_chapter_data(cfg)
    assert d.info.source == 'real' and 'JPEG' in d.info.notes
    tr = {bytes(a) for a in d.x_train.numpy().reshape(len(d.x_train), -1)}
    va = {bytes(a) for a in d.x_val.numpy().reshape(len(d.x_val), -1)}
    assert not tr & va                                          # validation held out of the training split
    assert np.bincount(d.y_test.numpy(), minlength=10).min() == cfg.n_test // 10    # stratified test subset


def test_evaluate_and_summarise():
    torch.manual_seed(0)
    cfg = ch1.cifar_config('quick')
    x, y = synthetic_images(64, seed=3)
    d = cmn.CifarData(*(torch.from_numpy(a) for a in (x, y, x, y, x, y)), info=None)
    cfg.n_test, cfg.n_pgd, cfg.n_strong = 64, 16, 8
    m = cmn.pixel_model(ch1.seed_cnn(0.125)).eval()
    ok = ch1.evaluate_model(m, d, cfg, strong=True)
    assert set(ok) == set(ch1.COLUMNS)
    assert len(ok['clean']) == 64 and len(ok['pgd20_5']) == 16 and len(ok['pgd50_8']) == 8
    # FGSM in the table is robustml.attacks.fgsm, per image
    xs = torch.from_numpy(x).float() / 255
    with torch.no_grad(): ref = m(fgsm(m, xs, torch.from_numpy(y), cmn.EPS8)).argmax(1) == torch.from_numpy(y)
    assert torch.equal(ok['fgsm8'], ref)
    # robust accuracy is a worst case, by construction on the same images: an image counts under PGD only if it is also
    # right clean, and at 8/255 only if it also withstands the attack at 5/255 (that example lies inside the 8/255 ball)
    for k in ('pgd20', 'pgd50'):
        n = len(ok[f'{k}_5'])
        assert not (ok[f'{k}_5'] & ~ok['clean'][:n]).any() and not (ok[f'{k}_8'] & ~ok[f'{k}_5']).any()
    s = cmn.summarise(ok, n_boot=100)
    for k in ch1.COLUMNS: assert s[k + '_ci'][0] <= s[k] <= s[k + '_ci'][1] and 0 <= s[k] <= 100


def test_clamp_effect():
    x = torch.zeros(1, 3, 4, 4)                                 # black: every value darker than the mean
    e = ch1.clamp_effect(x)
    assert e['below_mean'] == 1 and e['changed'] == 1 and e['mean_abs_change_255'] == pytest.approx(255 * np.mean(cmn.CIFAR_MEAN), rel=1e-4)


def test_guard_records_both_signals_and_targeted_is_no_weaker():
    "The chapter's guard decides on the targeted margin attack and records cross-entropy PGD beside it."
    torch.manual_seed(0)
    x, y = synthetic_images(32, seed=5)
    m = cmn.pixel_model(ch1.seed_cnn(0.125)).eval()
    g = cmn.RecordingGuard(torch.from_numpy(x), torch.from_numpy(y), cmn.EPS8, cmn.EPS8 / 4, steps=5, targets=3)
    g.step(m, 0)
    assert len(g.accs) == len(g.ce_accs) == len(g.seconds) == 1 and g.targets == 3
    # the targeted margin attack is tried toward 3 classes, but it is a different attack: allow two images of the 32
    assert g.accs[0] <= g.ce_accs[0] + 2 / 32
    g0 = cmn.RecordingGuard(torch.from_numpy(x), torch.from_numpy(y), cmn.EPS8, cmn.EPS8 / 4, steps=5)
    g0.step(m, 0)
    assert g0.ce_accs == [] and g0.accs[0] == g0.ce_acc(m)        # targets=0: the old guard, unchanged


def test_run_kept_epoch_counts_the_pretraining():
    r = ch1.Run('x', 'recipe', {}, None, 1., epochs=13, offset=10, selected=2)
    assert r.kept_epoch == 13
    assert ch1.Run('s', 'recipe', {}, None, 1., epochs=10).kept_epoch == 10
    assert ch1.Run('f', 'recipe', {}, None, 1., epochs=13, offset=10, selected=0).kept_epoch == 11


def test_setup_rejects_a_profile_name():
    with pytest.raises(TypeError): ch1.cifar_setup('quick')


def test_runner_quick_synthetic(data_env, tmp_path):
    "Plumbing: under quick the tiny models sit near chance, so this checks the record's shape and ranges, not learning."
    study = get_study('cifar-fgsm')
    assert study.paper == cmn.PAPER
    res = study.run('quick', seed=0)
    assert isinstance(res, Results) and res.profile == 'quick' and res.data.source == 'synthetic'
    m, runs = res.metrics, res.metrics['runs']
    assert list(runs) == ['standard', 'faithful', 'fix1_pixel', 'fix2_mode', 'corrected', 'fast_fgsm', 'fast_fgsm_aug',
                          'pgd_train', 'co_collapsed', 'co_guarded']
    for k, r in runs.items():
        for col in ('clean', 'seed_fgsm', 'fgsm5', 'pgd20_5', 'fgsm8', 'pgd20_8'):
            v, (lo, hi) = r['accuracy'][col], r['accuracy'][col + '_ci']
            assert 0 <= v <= 100 and lo <= v <= hi, (k, col)
        assert r['train_s'] > 0 and 1 <= r['kept_epoch'] <= r['epochs']
    assert m['best_recipe'] in ch1.MODERN and m['best_recipe_ce'] in ch1.MODERN
    for k in ('corrected', m['best_recipe']):
        for col in ('pgd50_5', 'pgd50_8'): assert 0 <= runs[k]['accuracy'][col] <= 100
    # the AutoAttack-style column: robust models only, both budgets; 8/255 counts only images robust at 5/255
    for k in ch1.AA_RUNS:
        aa = runs[k]['autoattack']
        assert set(aa) == {'5/255', '8/255'} and aa['8/255']['robust_accuracy'] <= aa['5/255']['robust_accuracy']
        assert aa['5/255']['version'] == 'course'
    assert runs['standard']['autoattack'] == {}
    assert runs['faithful']['modes'] == ['train', 'eval'] and runs['fix2_mode']['modes'] == ['train', 'train']
    # the overfitting demonstration: unguarded all the way, the guarded run a prefix of it
    cfg = ch1.cifar_config('quick')
    gu, g = runs['co_collapsed']['guard'], runs['co_guarded']['guard']
    assert len(gu['accs']) == cfg.epochs_co and g['accs'] == gu['accs'][:len(g['accs'])]
    for k in ('co_collapsed', 'co_guarded'):
        for col in ('clean', 'fgsm_co', 'pgd20_co'): assert 0 <= m['overfit_at_eps_co'][k][col] <= 100
    assert set(m['time_to_target']) == {'both', 'robust'}
    assert res.comparison().loc['faithful_clean', 'paper'] == 77.98
    assert res.comparison().loc['faithful_clean', 'ours'] == runs['faithful']['accuracy']['clean']
    assert all(set(r) == {'quantity', 'paper', 'ours', 'ci', 'note'} for r in res.table)
    q = {r['quantity']: r for r in res.table}
    assert q['standard model: clean accuracy (%)']['paper'] == cmn.PAPER['standard_clean']
    assert any('AutoAttack-style at 5/255' in k for k in q)
    back = Results.load(res.save(tmp_path/'cifar.json'))
    assert back.metrics == json.loads(json.dumps(res.to_dict()))['metrics']


def test_the_chapter_package_reads_bottom_up():
    "common imports none of the pages; fgsm builds on common; full on fgsm; time on full: no cycle, no hidden common module."
    import ast, importlib
    def imports(mod):
        tree = ast.parse(open(importlib.import_module(f'robustml.cifar.{mod}').__file__).read())
        return {n.module.lstrip('.') for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
    pages = {'common', 'fgsm', 'full', 'time'}
    assert imports('common') & pages == set()
    assert imports('fgsm') & pages == {'common'}
    assert imports('full') & pages == {'common', 'fgsm'}
    assert imports('time') & pages == {'common', 'fgsm', 'full'}
    assert imports('certify') & (pages | {'certify'}) == {'common', 'full'}   # the certification page builds on full's network
    from robustml.studies import STUDY_LIST
    mods = {name: mod for name, mod, *_ in STUDY_LIST}
    assert (mods['cifar-fgsm'], mods['cifar-full'], mods['cifar-time']) == ('robustml.cifar.fgsm', 'robustml.cifar.full', 'robustml.cifar.time')

