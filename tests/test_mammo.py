"Tests of robustml.mammo (chapter 2, lesion GANs): split by woman, coordinates, generators, losses, flip counting, CLI, bad input."
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustml import mammo
from robustml.cli import main as cli_main
from robustml.core import Results
from robustml.datasets import DataError


def _film(lesions=(), size=1024):
    "A fake film: a bright half-disc 'breast' on black, plus brighter disks at (row, col, radius)."
    rr, cc = np.mgrid[:size, :size]
    img = np.where((rr - size / 2) ** 2 + cc ** 2 < (0.45 * size) ** 2 * 4, 90, 0).astype(np.uint8)  # breast at the left edge
    for r, c, rad in lesions: img[(rr - r) ** 2 + (cc - c) ** 2 <= rad ** 2] = 250
    return img


@pytest.fixture
def mias_dir(tmp_path):
    "A four-film mini-MIAS folder (two women): mdb001 has a lesion at x=300, y=700 (from the bottom), r=40."
    from PIL import Image
    x, y, r = 300, 700, 40
    Image.fromarray(_film([(1023 - y, x, r)])).save(tmp_path / 'mdb001.png')
    for k in (2, 3, 4): Image.fromarray(_film()).save(tmp_path / f'mdb{k:03d}.png')
    (tmp_path / 'Info.txt').write_text(f"mdb001 F CIRC B {x} {y} {r}\nmdb002 F NORM\nmdb003 F NORM\nmdb004 F NORM\n")
    return tmp_path


def _cfg(**kw):
    return mammo.MammoConfig('quick', patch=32, **kw)


def test_patch_centred_on_lesion_contains_it(mias_dir):
    d, info = mammo.load_mammo_data(_cfg(n_jitter=3, neg_per_pos=2), seed=0, path=mias_dir)
    assert info.source == 'real' and d.x.shape[1:] == (1, 32, 32)
    les = np.flatnonzero(d.y.numpy() == 1)
    assert len(les) == 3 and (d.ref[les] == 'mdb001').all()
    for i in les:
        r, c = d.centre[i].round().astype(int)
        assert d.x[i, 0, r, c] > 0.9  # the lesion (250) is where the record says, after y -> row = 1023 - y
        assert abs(r - 16) <= 3 and abs(c - 16) <= 3  # centred up to the jitter (16 full-res px = 2 px here)
        assert d.radius[i] == pytest.approx(40 / 8, abs=0.5)
    # the mirrored row (y read from the top) holds no lesion in the film: the convention matters
    assert (d.x[d.y == 0] < 0.9).all()  # normal patches never contain the lesion's grey level


def test_split_by_woman_synthetic_and_real_ids(data_env):
    "Without data (the `data_env` fixture), quick falls back to the labelled stand-in; the split never shares a woman."
    d, info = mammo.load_mammo_data(mammo.mammo_config('quick'), seed=3)
    assert info.source == 'synthetic'
    splits = {s: set(d.woman[d.split == s]) for s in ('train', 'val', 'test')}
    assert not (splits['train'] & splits['val'] or splits['train'] & splits['test'] or splits['val'] & splits['test'])
    assert all(len(d.idx(s, 1)) > 0 and len(d.idx(s, 0)) > 0 for s in splits)
    assert mammo.woman_of('mdb001') == mammo.woman_of('mdb002') == 1 and mammo.woman_of('mdb003') == 2
    refs = [f'mdb{k:03d}' for k in range(1, 323)]
    w = np.array([mammo.woman_of(r) for r in refs])
    s = mammo.split_by_woman(w, (w % 3 == 0).astype(int), seed=0)
    for v in np.unique(w): assert len(set(s[w == v])) == 1
    with pytest.raises(ValueError, match='fractions'): mammo.split_by_woman(w, w * 0, (0.5, 0.5, 0.5))


def test_generators_keep_shape_and_range():
    torch.manual_seed(0)
    g = mammo.UNet((4, 8, 16)).eval()
    for x in (torch.rand(3, 1, 32, 32), torch.zeros(2, 1, 16, 16), torch.ones(2, 1, 16, 48)):
        with torch.no_grad(): y = g(x)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match='divisible'): g(torch.rand(1, 1, 30, 30))
    out = mammo.attack_all(g, g, torch.rand(4, 1, 16, 16), torch.tensor([1, 0, 1, 0]))
    assert out.shape == (4, 1, 16, 16)


def test_losses_match_formulas():
    rng = np.random.default_rng(0)
    dr, df = rng.normal(size=5), rng.normal(size=5)
    gr = rng.normal(size=(5, 1, 3, 3)) * 0.3
    sig = lambda t: 1 / (1 + np.exp(-t))
    n2 = (gr.reshape(5, -1) ** 2).sum(1)
    want_f = -np.log(sig(dr)).mean() + np.log(sig(df)).mean() + 10 / 2 * (n2 ** 2).mean() + abs(dr.mean() - 1)
    want_c = -np.log(sig(dr)).mean() - np.log(1 - sig(df)).mean() + 0.7 / 2 * n2.mean()
    T = lambda a: torch.tensor(a, dtype=torch.float64)
    assert mammo.d_loss_faithful(T(dr), T(df), T(gr), 10.).item() == pytest.approx(want_f, rel=1e-9)
    assert mammo.d_loss_corrected(T(dr), T(df), T(gr), 0.7).item() == pytest.approx(want_c, rel=1e-9)
    x, g = rng.random((4, 1, 5, 5)), rng.random((4, 1, 5, 5))
    nx, ng = (x - 0.485) / 0.229, (g - 0.485) / 0.229
    assert mammo.rel_l2_faithful(T(g), T(x)).item() == pytest.approx(((ng - nx) ** 2).mean() / (nx ** 2).mean(), rel=1e-9)
    per = ((g - x) ** 2).reshape(4, -1).sum(1) / (x ** 2).reshape(4, -1).sum(1)
    assert np.allclose(mammo.rel_l2(T(g), T(x)).numpy(), per)
    assert mammo.g_loss(T(df), T(0.3), 2.).item() == pytest.approx(-np.log(sig(df)).mean() + 0.6, rel=1e-9)
    p = torch.softmax(T(np.c_[dr, df]), 1)[torch.arange(5), torch.tensor([0, 1, 1, 0, 1])]
    want_fl = (-0.5 * (1 - p) ** 2 * p.log()).mean()
    assert mammo.focal_loss(T(np.c_[dr, df]), torch.tensor([0, 1, 1, 0, 1])).item() == pytest.approx(want_fl.item(), rel=1e-9)


def test_critic_gradient_is_input_gradient():
    "The penalty's gradient is d sum(D(real)) / d real, the same as autograd on a fresh graph."
    torch.manual_seed(0)
    clf = mammo.ZhouNet(4, blocks=2, hidden=16).eval()
    crit = mammo.Critic(clf).eval()
    x = torch.rand(3, 1, 16, 16)
    d, g = mammo._critic_grads(crit, x)
    x2 = x.clone().requires_grad_(True); crit(x2).sum().backward()
    assert torch.allclose(g, x2.grad, atol=1e-6) and torch.allclose(d, crit(x))


def test_flips_counted_only_on_correct_inputs():
    p_clean = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.7, 0.6])
    y = np.array([1, 1, 1, 0, 0, 0, 1])
    # correct at 0.5: lesions 0, 1, 6 and normal 3, 4; patch 2 (missed lesion) and 5 (false alarm) do not count
    p_att = np.array([0.1, 0.9, 0.1, 0.9, 0.2, 0.1, 0.4])
    r = mammo.fooled_counts(p_clean, p_att, y, 0.5)
    assert r['flip_remove'] == [2, 3] and r['flip_insert'] == [1, 2] and r['fooled_overall'] == [3, 5]
    assert r['fooled_overall_rate'] == pytest.approx(0.6) and r['fooled_overall_ci'][0] < 0.6 < r['fooled_overall_ci'][1]
    none = mammo.fooled_counts(np.array([0.1]), np.array([0.9]), np.array([1]), 0.5)
    assert none['flip_remove'] == [0, 0] and none['flip_remove_rate'] is None


def test_same_budget_baselines():
    x = torch.rand(4, 1, 16, 16) * 0.5 + 0.25
    xa = (x + 0.05 * torch.randn(4, 1, 16, 16)).clamp(0, 1)
    for kind in ('noise', 'blur'):
        xb = mammo.same_budget(x, xa, kind)
        assert xb.shape == x.shape and 0 <= xb.min() and xb.max() <= 1
        assert ((xb - x).flatten(1).norm(dim=1) <= (xa - x).flatten(1).norm(dim=1) * 1.001 + 1e-6).all()
    nb = mammo.same_budget(x, xa, 'noise')  # unclamped here (values stay inside [0, 1]): same L2 as the budget
    assert torch.allclose((nb - x).flatten(1).norm(dim=1), (xa - x).flatten(1).norm(dim=1), rtol=1e-4)
    with pytest.raises(ValueError): mammo.same_budget(x, xa, 'jpeg')


def test_missing_info_txt(mias_dir):
    (mias_dir / 'Info.txt').unlink()
    with pytest.raises(DataError, match='Info.txt'): mammo.load_mammo_data(_cfg(), path=mias_dir)


def test_wrong_image_size(mias_dir):
    from PIL import Image
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(mias_dir / 'mdb002.png')
    with pytest.raises(ValueError, match='1024x1024'): mammo.load_mammo_data(_cfg(), path=mias_dir)


def test_bad_arguments():
    with pytest.raises(ValueError, match='direction'):
        mammo.train_gan(mammo.ZhouNet(4), torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16), _cfg(), 'sideways')
    with pytest.raises(ValueError, match='pool'): mammo.ZhouNet(pool='median')
    with pytest.raises(ValueError, match='square'): mammo.crop_patches(np.zeros((10, 12)), np.array([[5, 5]]), 4)


def test_at_size_sets_the_length_and_keeps_the_direction():
    x = torch.rand(5, 1, 16, 16) * 0.5 + 0.25
    xa = (x + 0.02 * torch.randn(5, 1, 16, 16)).clamp(0, 1); xa[0] = x[0]
    for size in (0.0005, 0.002):   # small enough that nothing is clipped: exactly the size asked for
        xs = mammo.at_size(x, xa, size)
        assert torch.allclose(mammo.rel_l2(xs, x)[1:], torch.full((4,), size), rtol=1e-3)
        assert torch.equal(xs[0], x[0])
        cos = F.cosine_similarity((xs - x)[1:].flatten(1), (xa - x)[1:].flatten(1))
        assert torch.allclose(cos, torch.ones(4), atol=1e-4)
    big = mammo.at_size(x, xa, 10.)   # clipping to [0, 1] only shrinks the change
    assert 0 <= big.min() and big.max() <= 1 and (mammo.rel_l2(big, x) <= 10. * (1 + 1e-5)).all()
    for bad in (-0.1, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='size'): mammo.at_size(x, xa, bad)
    with pytest.raises(ValueError, match='shape'): mammo.at_size(x, xa[:2], 0.1)

def test_reproduce_quick_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv('ROBUSTML_DATA', raising=False); monkeypatch.setenv('ROBUSTML_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('ROBUSTML_OFFLINE', '1'); monkeypatch.setenv('ROBUSTML_PROGRESS', '0')
    assert cli_main(['reproduce', 'mammo-gan', '--profile', 'quick', '--out', str(tmp_path)]) == 0
    d = json.loads((tmp_path / 'mammo-gan.json').read_text())
    res = Results.load(tmp_path / 'mammo-gan.json')
    assert res.profile == 'quick' and res.data.source == 'synthetic'
    m = d['metrics']
    for key in ('flip_remove', 'flip_insert', 'fooled_overall'):
        k, n = m[key]; assert 0 <= k <= n
    assert m['fooled_overall'] == [m['flip_remove'][0] + m['flip_insert'][0], m['flip_remove'][1] + m['flip_insert'][1]]
    rows = {r['quantity']: r for r in d['table']}
    assert all(set(r) == {'quantity', 'paper', 'ours', 'ci', 'note'} for r in d['table'])
    assert rows['fooled overall (%) [faithful]']['paper'] == 69.1
    for v in mammo.VARIANTS:   # the ablation at one change size: every step's changes rescaled to the median size
        assert abs(m[f'{v}_sized_rel_l2_test'] - m['ablation_size']) <= 0.05 * m['ablation_size'] + 1e-9
        k, n = m[f'{v}_sized_fooled_overall']; assert n == m[f'{v}_fooled_overall'][1] and 0 <= k <= n
    # the masked generators go through the same count, on the same correctly classified test patches
    assert m['localised_fooled_overall'][1] == m['corrected_fooled_overall'][1] and 0 <= m['localised_remove_in_disk'] <= 1
    assert 'localised generators, fooled overall (%)' in rows
    assert 'mammo-gan' in capsys.readouterr().out


def test_seeds_repeat_the_pipeline(tmp_path, monkeypatch):
    "Each extra seed re-runs the steps up to the fooled counts; the study's own seed is reused, and the summary is the t-interval of the rows."
    import dataclasses
    from robustml.stats import mean_ci
    monkeypatch.delenv('ROBUSTML_DATA', raising=False); monkeypatch.setenv('ROBUSTML_CACHE', str(tmp_path / 'cache'))
    monkeypatch.setenv('ROBUSTML_OFFLINE', '1'); monkeypatch.setenv('ROBUSTML_PROGRESS', '0')
    cfg = dataclasses.replace(mammo.mammo_config('quick'), n_seeds=2)
    st = mammo.mammo_setup(cfg, 0)
    for step in mammo.MAMMO_STEPS: step(st)
    S = st.seeds
    assert list(S.seed) == [0, 1]
    assert S.iloc[0].to_dict() == mammo.mammo_headline(st)             # its own run, not a re-run
    assert S.iloc[1].to_dict() == mammo.seed_headline_mammo(cfg, 1)    # one seed, the same numbers twice
    for v in mammo.VARIANTS:
        m, lo, hi = st.metrics[f'seeds_{v}_fooled_overall']
        assert (m, lo, hi) == mean_ci(S[f'{v}_fooled_overall']) and lo <= m <= hi
        k, n = (int(a) for a in S[f'{v}_fooled_overall_counts'][0].split('/'))
        assert [k, n] == list(st.metrics[f'{v}_fooled_overall'])
    rows = {r['quantity']: r for r in mammo.results_table(st)}
    row = rows['fooled overall, mean over 2 seeds (%) [faithful]']
    assert row['paper'] == mammo.PAPER['fooled_overall_pct'] and row['ci'][0] <= row['ours'] <= row['ci'][1]
    one = mammo.mammo_setup(mammo.mammo_config('quick'), 0)   # n_seeds=1: no re-run, no row over seeds
    for step in mammo.MAMMO_STEPS: step(one)
    assert len(one.seeds) == 1 and not any('seeds' in r['quantity'] for r in mammo.results_table(one))


def test_ablation_steps_change_one_thing_each():
    "faithful -> matched changes the fidelity term (and matches the size); matched -> corrected changes only the D loss."
    cfg = _cfg()
    d_f, fid_f, m_f = mammo.variant_losses('faithful', cfg)
    d_m, fid_m, m_m = mammo.variant_losses('matched', cfg)
    d_c, fid_c, m_c = mammo.variant_losses('corrected', cfg)
    assert (m_f, m_m, m_c) == (False, True, True)
    g, x = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    assert fid_f(g, x).item() == pytest.approx(mammo.rel_l2_faithful(g, x).item())
    assert fid_m(g, x).item() == pytest.approx(fid_c(g, x).item()) == pytest.approx(mammo.rel_l2(g, x).mean().item())
    dr, df, gr = torch.tensor([0.3, 1.]), torch.tensor([-2., 0.5]), torch.rand(2, 1, 4, 4)
    assert d_f(dr, df, gr).item() == pytest.approx(d_m(dr, df, gr).item())
    assert d_c(dr, df, gr).item() == pytest.approx(mammo.d_loss_corrected(dr, df, gr, cfg.r1_gamma).item())
    with pytest.raises(ValueError, match='variant must be one of'): mammo.variant_losses('zhou', cfg)


def test_fidelity_controller_finds_the_weight_that_gives_the_target_size():
    "A toy generator whose change shrinks as 1/weight: the controller settles where the change equals the target."
    cfg = _cfg(); log_w = 0.
    for _ in range(300):
        size = 0.05 / math.exp(log_w)   # change size falls as the weight rises
        log_w = mammo.update_fid_weight(log_w, size, cfg)
    assert 0.05 / math.exp(log_w) == pytest.approx(cfg.size_target, rel=0.01)


def test_c2st_positive_and_negative_controls():
    "Gross noise is detected; two draws of one distribution are not (at a fixed seed)."
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(60, 1, 16, 16, generator=g) * 0.5 + 0.25, torch.rand(60, 1, 16, 16, generator=g) * 0.5 + 0.25
    noisy = mammo.noise_at(b, 0.5, seed=1)
    assert mammo.rel_l2(mammo.noise_at(b, 0.01, seed=1), b).mean().item() == pytest.approx(0.01, rel=0.2)  # clipping aside
    auc_pos, ci_pos = mammo.c2st_auc(a, noisy, epochs=8, seed=0, n_boot=200)
    auc_neg, ci_neg = mammo.c2st_auc(a, b, epochs=8, seed=0, n_boot=200)
    assert ci_pos[0] > 0.5 and auc_pos > 0.8
    assert ci_neg[0] <= 0.5 <= ci_neg[1] or auc_neg < 0.65


def test_masked_generator_changes_only_its_disk():
    "MaskedUNet: exactly the input outside the disk, the U-Net's output at the centre, values in [0, 1], gradients to the U-Net."
    torch.manual_seed(0)
    g = mammo.MaskedUNet((4, 8), radius=6., soft=1.)
    x = torch.rand(2, 1, 32, 32)
    y = g(x)
    m = g.mask(32, 32)
    assert m[16, 16] == 1 and m[0, 0] == 0 and ((m > 0) & (m < 1)).any()       # centred, with a soft edge
    assert torch.equal(y[..., m == 0], x[..., m == 0])                           # outside: unchanged, exactly
    assert torch.allclose(y[..., 16, 16], g.unet(x)[..., 16, 16])                # centre: the U-Net's output
    assert 0 <= y.min() and y.max() <= 1
    y.sum().backward()
    assert all(p.grad is not None for p in g.unet.parameters())
