"Core services and the study list: the parallel map, the thread policy, the run order and record reuse."
import json, os

import numpy as np
import pytest

from robustml.core import DataInfo, Results, cpu_threads, omp_threads, parallel_map, torch_threads
from robustml.studies import STUDY_LIST, find_record, format_table, load_studies, results_text, run_order


def _draw(seed):
    return float(np.random.default_rng(seed).normal(size=500).mean())


def test_parallel_map_equals_serial():
    serial = [_draw(s) for s in range(8)]
    assert parallel_map(_draw, range(8)) == serial
    assert parallel_map(_draw, range(8), n_jobs=2) == serial


def test_parallel_map_follows_joblib_config():
    from joblib import parallel_config
    with parallel_config(backend='threading', n_jobs=2):
        assert parallel_map(_draw, range(4)) == [_draw(s) for s in range(4)]


def test_thread_policy(monkeypatch):
    monkeypatch.delenv('ROBUSTML_THREADS', raising=False)
    assert cpu_threads('quick') == 1 and cpu_threads('paper') == (os.cpu_count() or 1)
    assert omp_threads('quick') == 1
    monkeypatch.setenv('ROBUSTML_THREADS', '3')
    assert cpu_threads('quick') == 3
    monkeypatch.setenv('ROBUSTML_THREADS', 'many')
    with pytest.raises(ValueError, match='ROBUSTML_THREADS'): cpu_threads()


def test_torch_threads_is_scoped():
    import torch
    n0 = torch.get_num_threads()
    with torch_threads(1): assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == n0


def test_study_list_order_and_dependencies():
    studies = load_studies()
    assert list(studies) == [n for n, _, _ in STUDY_LIST if n in studies]        # chapter order
    assert run_order(['cifar-time']) == ['cifar-full', 'cifar-time']
    order = run_order(['all'])
    assert order.index('cifar-full') < order.index('cifar-time') and set(order) == set(studies)
    with pytest.raises(KeyError, match='Unknown study'): run_order(['nope'])


def test_core_names_no_chapter():
    "The ground floor never names the top floor: core, stats, training, attacks and robust import no chapter."
    import robustml
    from pathlib import Path
    chapters = {m.split('.')[-1] for _, m, _ in STUDY_LIST}
    for mod in ('core', 'stats', 'training', 'attacks', 'robust'):
        src = (Path(robustml.__file__).parent / f'{mod}.py').read_text()
        assert not any(f'robustml.{c}' in src or f'from .{c} ' in src or f'from . import {c}' in src for c in chapters), mod


def test_find_record(tmp_path):
    r = Results('iris-dp', 'quick', DataInfo('iris', 'real'), seed=3)
    r.save(tmp_path / 'iris-dp.json')
    assert find_record('iris-dp', 'quick', 3, tmp_path).seed == 3
    assert find_record('iris-dp', 'quick', 4, tmp_path) is None and find_record('iris-dp', 'course', 3, tmp_path) is None
    (tmp_path / 'cifar-full.json').write_text('{"half": ')                        # a partial file is no record
    assert find_record('cifar-full', 'quick', 0, tmp_path) is None


def test_results_text_prints_the_whole_table():
    r = Results('demo', 'quick', DataInfo('toy', 'synthetic', {'n': 10}), metrics={'acc': 50.0}, paper={'acc': 80.0},
                table=[{'quantity': 'accuracy (%)', 'paper': 80.0, 'ours': 50.0, 'ci': [40.0, 60.0], 'note': 'quick: 10 rows'},
                       {'quantity': 'extra row', 'paper': None, 'ours': 1.0, 'ci': None, 'note': 'no paper number'}])
    text = results_text(r)
    assert 'extra row' in text and 'quick: 10 rows' in text and '[40, 60]' in text and 'SYNTHETIC' in text
    assert format_table([{'a': 1.23456, 'b': None}]).splitlines()[2].split() == ['1.235', '-']


def test_run_colours_are_stable_across_processes():
    "A run's colour comes from its name, never from plotting order or Python's per-process hash seed."
    import subprocess, sys
    from robustml.plots import PALETTE, run_color
    code = "from robustml.plots import run_color; print(run_color('some unnamed run'), run_color('corrected'))"
    outs = {subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'PYTHONHASHSEED': s},
                           check=True).stdout for s in ('1', '2')}
    assert outs == {f"{run_color('some unnamed run')} {run_color('corrected')}\n"} and run_color('some unnamed run') in PALETTE
