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


FOUNDATIONS = ('core', 'stats', 'plots', 'datasets/__init__', 'datasets/images', 'datasets/signals', 'datasets/tabular',
               'datasets/expression', 'training', 'attacks', 'robust', 'certify', 'quiz')   # studies and cli list the chapters

def test_foundations_name_no_chapter():
    "The ground floor never names the top floor: no foundation module imports a chapter or names a chapter's runs."
    import robustml, subprocess, sys
    from pathlib import Path
    root = Path(robustml.__file__).parent
    chapters = {m.split('.')[1] for _, m, _ in STUDY_LIST}
    names = {p.stem for p in root.glob('*.py')} | {p.name for p in root.iterdir() if (p / '__init__.py').exists()}
    assert names - {'__init__', '_modidx', 'studies', 'cli'} == {m.split('/')[0] for m in FOUNDATIONS} | chapters, \
        'a new module: add it to FOUNDATIONS or to STUDY_LIST'
    for mod in FOUNDATIONS:
        src = (root / f'{mod}.py').read_text()
        assert not any(f'robustml.{c}' in src or f'from .{c} ' in src or f'from ..{c} ' in src or f'from . import {c}' in src
                       for c in chapters), mod
    # the colours: importing the foundations alone gives fixed colours only to generic runs and attacks
    code = 'import robustml.plots as p, robustml.robust, robustml.certify, robustml.quiz; print(sorted(p.RUN_COLORS))'
    base = eval(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout)
    from robustml.plots import RUN_COLORS
    load_studies()                                                               # imports every chapter
    assert set(base) < set(RUN_COLORS) and set(base) <= {'clean', 'standard', 'baseline', 'non-private', 'FGSM', 'PGD',
                                                          'AutoAttack', 'APGD-CE', 'APGD-T', 'Square'}


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
    code = "from robustml.plots import run_color; print(run_color('some unnamed run'), run_color('standard'))"
    outs = {subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'PYTHONHASHSEED': s},
                           check=True).stdout for s in ('1', '2')}
    assert outs == {f"{run_color('some unnamed run')} {run_color('standard')}\n"} and run_color('some unnamed run') in PALETTE


# --- safe saves: `atomic_write`, `Results.save`, `save_state` --------------------------------------------------------

def _record(i: int) -> Results:
    "A record whose JSON is large enough (~100 kB) that a torn write would be visible to a reader."
    return Results('demo', 'quick', DataInfo('toy', 'synthetic'), metrics={'i': i}, table=[{'row': j, 'w': i} for j in range(2000)])


def _save_many(args):
    "Process worker: save `n` records to `path` (module level, so it pickles)."
    path, start, n = args
    for i in range(start, start + n): _record(i).save(path)
    return n


def test_atomic_write_creates_folder_and_mode(tmp_path):
    from robustml.core import atomic_write
    p = atomic_write(tmp_path/'a'/'b'/'x.txt', lambda t: t.write_text('hi'))
    assert p == tmp_path/'a'/'b'/'x.txt' and p.read_text() == 'hi'
    old = os.umask(0o022); os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o666 & ~old  # not mkstemp's private 0600
    assert [q.name for q in p.parent.iterdir()] == ['x.txt']


@pytest.mark.parametrize('exc', [OSError('disk full'), KeyboardInterrupt()])
def test_atomic_write_failure_keeps_old_file(tmp_path, exc):
    from robustml.core import atomic_write
    p = tmp_path/'rec.json'
    p.write_text('{"old": 1}')
    def write(t):
        t.write_text('{"new": ')  # half written, then the failure
        raise exc
    with pytest.raises(type(exc)): atomic_write(p, write)
    assert json.loads(p.read_text()) == {'old': 1}
    assert sorted(q.name for q in tmp_path.iterdir()) == ['rec.json']  # no temporary file left behind


def test_results_save_failure_keeps_old_record(tmp_path):
    p = _record(1).save(tmp_path/'demo.json')
    bad = _record(2); bad.metrics['x'] = object.__new__(type('Odd', (), {'__str__': lambda s: 1/0}))
    with pytest.raises(ZeroDivisionError): bad.save(p)
    assert Results.load(p).metrics == {'i': 1} and sorted(q.name for q in tmp_path.iterdir()) == ['demo.json']


def test_concurrent_saves_threads_and_reader(tmp_path):
    "Many threads save to one path while a reader keeps parsing it: no writer fails, the reader never sees half a file."
    import threading
    from concurrent.futures import ThreadPoolExecutor
    p = tmp_path/'out'/'demo.json'
    _record(-1).save(p)
    stop, seen, bad = threading.Event(), [], []
    def reader():
        while not stop.is_set():
            try: seen.append(json.loads(p.read_text())['metrics']['i'])
            except Exception as e: bad.append(repr(e))
    t = threading.Thread(target=reader); t.start()
    try:
        with ThreadPoolExecutor(8) as ex: list(ex.map(lambda i: _record(i).save(p), range(64)))
    finally:
        stop.set(); t.join()
    assert bad == [] and len(seen) > 0
    assert Results.load(p).metrics['i'] in range(64)
    assert sorted(q.name for q in p.parent.iterdir()) == ['demo.json']


def test_concurrent_saves_processes(tmp_path):
    "Writers in separate processes (the old fixed `.part` name made them fail each other) all succeed."
    import multiprocessing as mp
    p = tmp_path/'demo.json'
    with mp.get_context('spawn').Pool(4) as pool:
        assert pool.map(_save_many, [(p, 100*k, 10) for k in range(4)]) == [10]*4
    assert Results.load(p).metrics['i'] in {100*k + i for k in range(4) for i in range(10)}
    assert sorted(q.name for q in tmp_path.iterdir()) == ['demo.json']
