"Exit codes and messages of the `robustml data` commands, in-process and once through the console script."
import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys

import pytest

import robustml.datasets as D
from robustml.datasets import expression, images, signals, tabular
from robustml.cli import main


@pytest.fixture
def golub_root(tmp_path, shared_data, monkeypatch):
    "A private ROBUSTML_DATA holding a copy of the real Golub CSVs (small), so a test may corrupt it."
    root = tmp_path/'data'
    shutil.copytree(shared_data/'golub', root/'golub')
    for f in (root/'golub').iterdir(): f.chmod(0o644)
    monkeypatch.setenv('ROBUSTML_DATA', str(root))
    return root


def test_data_list_real(shared_data, capsys):
    assert main(['data', 'list']) == 0
    out = capsys.readouterr().out
    rows = {l.split()[0]: l.split() for l in out.splitlines()[2:]}
    for n in ('cifar10', 'mias', 'cinc2017', 'golub', 'tcga-breast', 'mammography'):
        assert rows[n][1:3] == ['True', 'ROBUSTML_DATA'] and rows[n][4] == 'True', rows[n]
    assert rows['creditcard'][1] == 'False' or (shared_data/'creditcard').exists()
    assert rows['iris'][1] == 'True'


def test_data_verify_ok_and_mismatch(golub_root, capsys):
    assert main(['data', 'verify', 'golub']) == 0
    f = golub_root/'golub'/'actual.csv'
    f.write_text(f.read_text().replace('AML', 'ALL', 1))
    assert main(['data', 'verify', 'golub']) == 1
    err = capsys.readouterr().err
    assert 'golub' in err and ('actual.csv' in err if hasattr(D, 'check') else 'checksum mismatch' in err)
    assert main(['data', 'verify']) == 1  # all datasets: still fails on golub


def test_data_verify_missing_file_fails(golub_root, capsys):
    (golub_root/'golub'/'data_set_ALL_AML_independent.csv').unlink()
    assert main(['data', 'verify', 'golub']) == 1


def test_unknown_dataset_exit_2(capsys):
    assert main(['data', 'verify', 'nope']) == 2
    assert main(['data', 'fetch', 'nope']) == 2
    err = capsys.readouterr().err
    assert "Unknown dataset 'nope'" in err and 'cifar10' in err


def test_fetch_offline_exit_1(data_env, capsys):
    assert main(['data', 'fetch', 'creditcard']) == 1
    err = capsys.readouterr().err
    assert 'robustml: error:' in err and "'creditcard'" in err and 'ROBUSTML_DATA' in err and 'storage.googleapis.com' in err


def _serve_creditcard(http_server, monkeypatch, served: bytes, expected: bytes):
    routes, base = http_server
    routes['/creditcard.csv'] = served
    form = D.Form('creditcard/creditcard.csv', 'csv', url=f'{base}/creditcard.csv', sha256=hashlib.sha256(expected).hexdigest(),
                  size=len(expected))
    monkeypatch.setitem(D.DATASETS, 'creditcard', dataclasses.replace(D.DATASETS['creditcard'], forms=(form,)))
    monkeypatch.delenv('ROBUSTML_OFFLINE')


def test_fetch_download_ok(data_env, http_server, monkeypatch, capsys):
    _serve_creditcard(http_server, monkeypatch, b'Time,Class\n0,0\n', b'Time,Class\n0,0\n')
    assert main(['data', 'fetch', 'creditcard']) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(data_env/'creditcard'/'creditcard.csv')
    assert main(['data', 'verify', 'creditcard']) == 0


def test_fetch_corrupt_download_exit_1(data_env, http_server, monkeypatch, capsys):
    _serve_creditcard(http_server, monkeypatch, b'Time,Class\n0,1\n', b'Time,Class\n0,0\n')
    assert main(['data', 'fetch', 'creditcard']) == 1
    assert 'mismatch' in capsys.readouterr().err
    assert not (data_env/'creditcard').exists() or not any((data_env/'creditcard').iterdir())


def test_console_script(data_env):
    "The installed `robustml` entry point runs and lists the registry (no checksums: fast)."
    exe = shutil.which('robustml')
    cmd = [exe] if exe else [sys.executable, '-c', 'import sys; from robustml.cli import main; sys.exit(main())']
    r = subprocess.run(cmd + ['data', 'list', '--no-verify'], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert all(n in r.stdout for n in ('cifar10', 'creditcard', 'iris'))
    r = subprocess.run(cmd + ['data', 'fetch', 'golub'], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert r.returncode == 1 and 'golub' in r.stderr and 'ROBUSTML_DATA' in r.stderr


# --- reproduce: --out checked first, each study run and saved on its own, a summary, one-line user errors ---------------
import json
from pathlib import Path

import robustml.studies as rs
from robustml.core import DataInfo, Results


def _fake_study(name, calls, fail=None):
    "A study that runs in microseconds; `fail` raises inside the run."
    def run(profile, seed=0):
        calls.append(name)
        if fail is not None: raise fail
        return Results(name, profile, DataInfo('toy', 'synthetic', {'n': 1}), metrics={'x': 1.0}, seed=seed,
                       table=[{'quantity': 'x', 'paper': None, 'ours': 1.0, 'ci': None, 'note': 'fake'}])
    return rs.Study(name, f'fake study {name}', run, 'tests.fake')


@pytest.fixture
def fake_studies(monkeypatch):
    """Replace the study list by four fake studies: `a`, `b` (fails), `c` (builds on `b`), `d`; returns
    `(calls, set_fail)` where `set_fail(name, exc)` makes another study fail."""
    calls, fails = [], {'b': RuntimeError('boom\nsecond line')}
    monkeypatch.setattr(rs, 'STUDY_LIST', tuple((n, 'robustml_no_such_chapter', d) for n, d in
                                                 (('a', ()), ('b', ()), ('c', ('b',)), ('d', ()))))
    reg = {}
    monkeypatch.setattr(rs, 'STUDIES', reg)
    def build():
        reg.clear(); reg.update({n: _fake_study(n, calls, fails.get(n)) for n in 'abcd'})
    build()
    def set_fail(name, exc): fails[name] = exc; build()
    monkeypatch.setenv('ROBUSTML_PROFILE', 'quick')
    return calls, set_fail


def test_reproduce_all_continues_after_a_failure(fake_studies, tmp_path, capsys):
    calls, _ = fake_studies
    out = tmp_path / 'out'
    assert main(['reproduce', 'all', '--out', str(out)]) == 1
    cap = capsys.readouterr()
    assert calls == ['a', 'b', 'd']  # c is never run: it builds on b
    assert sorted(p.name for p in out.iterdir()) == ['a.json', 'd.json']
    assert Results.load(out / 'd.json').metrics == {'x': 1.0}
    lines = cap.err.splitlines()
    summary = lines[lines.index('robustml: 2 of 4 studies did not complete:'):]
    assert summary[1] == '  b: failed (run): RuntimeError: boom'  # one line each
    assert summary[2] == '  c: skipped: it builds on b, which did not complete'
    assert 'Traceback' not in cap.err and 'second line' in cap.err  # the whole message once, when it happens


def test_reproduce_all_ok_exit_0(fake_studies, tmp_path, capsys):
    calls, set_fail = fake_studies
    set_fail('b', None)
    assert main(['reproduce', 'all', '--out', str(tmp_path)]) == 0
    assert calls == list('abcd') and '4 of 4 studies completed' in capsys.readouterr().out


def test_reproduce_failed_save_does_not_stop_the_others(fake_studies, tmp_path, monkeypatch, capsys):
    calls, set_fail = fake_studies
    set_fail('b', None)
    real_save = Results.save
    def save(self, path):
        if self.study == 'a': raise OSError(28, 'No space left on device')
        return real_save(self, path)
    monkeypatch.setattr(Results, 'save', save)
    assert main(['reproduce', 'all', '--out', str(tmp_path)]) == 1
    cap = capsys.readouterr()
    assert calls == list('abcd') and sorted(p.name for p in tmp_path.iterdir()) == ['b.json', 'c.json', 'd.json']
    assert f"a: failed (save to {tmp_path / 'a.json'}): OSError: [Errno 28] No space left on device" in cap.err
    assert '== a [quick profile' in cap.out  # the table was printed before the save: no number is lost


def test_reproduce_dependency_failure_skips_the_named_study(fake_studies, tmp_path, capsys):
    calls, _ = fake_studies
    assert main(['reproduce', 'c', '--out', str(tmp_path)]) == 1
    assert calls == ['b'] and 'c: skipped: it builds on b' in capsys.readouterr().err


def test_reproduce_data_error_in_a_study_is_one_line(fake_studies, tmp_path, capsys):
    calls, set_fail = fake_studies
    err = getattr(D, 'DataError', D.ChecksumError)
    set_fail('a', err("golub: data_set_ALL_AML_train.csv: SHA-256 mismatch; replace it or run `robustml data fetch golub`"))
    assert main(['reproduce', 'a', '--out', str(tmp_path)]) == 1
    e = capsys.readouterr().err
    assert 'data_set_ALL_AML_train.csv' in e and 'robustml data fetch golub' in e and 'Traceback' not in e


def _bad_out(tmp_path):
    f = tmp_path / 'a-file'; f.write_text('not a folder')
    return {'file': f, 'under a file': f / 'sub'}


@pytest.mark.parametrize('case', ['file', 'under a file'])
def test_reproduce_bad_out_fails_before_any_work(fake_studies, tmp_path, capsys, case):
    calls, _ = fake_studies
    out = _bad_out(tmp_path)[case]
    assert main(['reproduce', 'all', '--out', str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert calls == [] and len(err.splitlines()) == 1 and err.startswith('robustml: error: --out ') and str(out) in err


def test_reproduce_unwritable_out(fake_studies, tmp_path, monkeypatch, capsys):
    "A folder that refuses files (simulated: tests may run as root, who can write anywhere) fails before any work."
    import tempfile
    calls, _ = fake_studies
    def refuse(*a, **k): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(tempfile, 'mkstemp', refuse)
    assert main(['reproduce', 'all', '--out', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert calls == [] and 'cannot write to the folder (Permission denied)' in err


@pytest.mark.skipif(not hasattr(os, 'geteuid') or os.geteuid() == 0, reason='root can write to a read-only folder')
def test_reproduce_read_only_out(fake_studies, tmp_path, capsys):
    calls, _ = fake_studies
    ro = tmp_path / 'ro'; ro.mkdir(); ro.chmod(0o500)
    try: assert main(['reproduce', 'all', '--out', str(ro)]) == 2 and main(['reproduce', 'all', '--out', str(ro / 'x')]) == 2
    finally: ro.chmod(0o700)
    assert calls == []


def test_check_out_creates_and_leaves_nothing(tmp_path):
    from robustml.cli import check_out
    assert check_out(tmp_path / 'x' / 'y') == tmp_path / 'x' / 'y' and list((tmp_path / 'x' / 'y').iterdir()) == []


def test_unknown_study_one_line(fake_studies, tmp_path, capsys):
    assert main(['reproduce', 'nope', '--out', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "robustml: error: Unknown study 'nope'. Registered studies: a, b, c, d (or 'all')"
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('argv', [['reproduce', 'a'], ['reproduce', 'a', '--profile', 'quick'], ['data', 'list', '--no-verify']])
def test_bad_profile_env_one_line(fake_studies, tmp_path, monkeypatch, capsys, argv):
    calls, _ = fake_studies
    monkeypatch.setenv('ROBUSTML_PROFILE', 'bogus')
    assert main(argv + (['--out', str(tmp_path)] if argv[0] == 'reproduce' else [])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'bogus'" in err and 'quick, course, paper' in err and calls == []


def test_internal_error_one_line_and_debug(fake_studies, monkeypatch, capsys):
    import robustml.cli as cli
    def broken(args): raise ZeroDivisionError('division by zero')
    monkeypatch.setattr(cli, 'cmd_studies', broken)
    monkeypatch.delenv('ROBUSTML_DEBUG', raising=False)
    assert main(['studies']) == 1
    err = capsys.readouterr().err
    assert 'internal error: ZeroDivisionError: division by zero' in err and 'ROBUSTML_DEBUG=1' in err and 'Traceback' not in err
    monkeypatch.setenv('ROBUSTML_DEBUG', '1')
    with pytest.raises(ZeroDivisionError): main(['studies'])


# --- data fetch / verify: one line, every bad file ---------------------------------------------------------------------

def test_fetch_builtin_iris(data_env, capsys):
    assert main(['data', 'fetch', 'iris']) == 0
    cap = capsys.readouterr()
    assert cap.out == '' and cap.err.strip() == 'robustml: iris ships with scikit-learn: nothing to fetch'


def _fake_golub(root: Path):
    "A private ROBUSTML_DATA with a fake two-file Golub folder, registered with its own checksums."
    files = {'a.csv': b'gene,x\n1,2\n', 'b.csv': b'gene,y\n3,4\n'}
    g = root / 'golub'; g.mkdir(parents=True)
    for n, b in files.items(): (g / n).write_bytes(b)
    form = D.Form('golub', 'csv', marker='a.csv', sha256={n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    return g, dataclasses.replace(D.DATASETS['golub'], forms=(form,))


@pytest.fixture
def fake_golub(data_env, tmp_path, monkeypatch):
    g, d = _fake_golub(tmp_path / 'data')
    monkeypatch.setitem(D.DATASETS, 'golub', d)
    monkeypatch.setenv('ROBUSTML_DATA', str(tmp_path / 'data'))
    return g


def test_verify_lists_every_bad_file(fake_golub, capsys):
    assert main(['data', 'verify', 'golub']) == 0
    (fake_golub / 'a.csv').write_bytes(b'gene,x\n1,3\n')
    (fake_golub / 'b.csv').write_bytes(b'gene,y\n3,5\n')
    assert main(['data', 'verify', 'golub']) == 1
    err = capsys.readouterr().err
    assert 'golub' in err and 'Traceback' not in err
    if hasattr(D, 'check'): assert 'a.csv' in err and 'b.csv' in err   # the library names each bad file


def test_verify_cli_prints_each_problem_from_check(fake_golub, monkeypatch, capsys):
    "With `datasets.check`, every problem line is printed (here a stand-in `check`, so the CLI is tested on its own)."
    monkeypatch.setattr(D, 'check', lambda n: [f'{n}/a.csv: SHA-256 mismatch', f'{n}/b.csv: missing'] if n == 'golub' else [],
                        raising=False)
    assert main(['data', 'verify', 'golub', 'iris', 'creditcard']) == 1
    cap = capsys.readouterr()
    assert cap.err.splitlines() == ['robustml: 2 problem(s) in 1 dataset(s):', '  golub: golub/a.csv: SHA-256 mismatch',
                                    '  golub: golub/b.csv: missing']
    rows = {l.split()[0]: l.split() for l in cap.out.splitlines()[2:]}
    assert rows['golub'][1:3] == ['True', 'False'] and rows['creditcard'][1:3] == ['False', '-'] and rows['iris'][1] == 'True'


def test_fetch_does_not_print_success_on_a_bad_copy(fake_golub, capsys):
    assert main(['data', 'fetch', 'golub']) == 0 and capsys.readouterr().out.strip() == str(fake_golub)
    (fake_golub / 'b.csv').write_bytes(b'tampered')
    assert main(['data', 'fetch', 'golub']) == 1
    cap = capsys.readouterr()
    assert cap.out == '' and 'robustml: error:' in cap.err and 'golub' in cap.err and 'Traceback' not in cap.err


def test_fetch_data_error_from_library_is_printed(data_env, monkeypatch, capsys):
    err = getattr(D, 'DataError', D.ChecksumError)
    def fetch(name): raise err(f"{name}: x.csv is corrupt: replace it, or run `robustml data fetch {name}`")
    monkeypatch.setattr(D, 'fetch', fetch)
    assert main(['data', 'fetch', 'golub']) == 1
    cap = capsys.readouterr()
    assert cap.out == '' and cap.err.startswith('robustml: error: ') and 'x.csv is corrupt' in cap.err and 'Traceback' not in cap.err


def test_data_error_anywhere_is_one_line(data_env, monkeypatch, capsys):
    "A bad-data error from any command is printed as its message, not a traceback."
    def boom(**k): raise D.ChecksumError('creditcard/creditcard.csv: size 3 bytes, expected 150,828,752')
    monkeypatch.setattr(D, 'status_all', boom)
    assert main(['data', 'list']) == 1
    err = capsys.readouterr().err
    assert err.startswith('robustml: error: ') and 'creditcard.csv: size 3 bytes, expected 150,828,752' in err and 'Traceback' not in err


def test_reproduce_unexpected_error_in_the_loop_does_not_stop_the_others(fake_studies, tmp_path, monkeypatch, capsys):
    import robustml.cli as cli
    calls, set_fail = fake_studies
    set_fail('b', None)
    real = cli.find_record
    def find_record(name, *a, **k):
        if name == 'b': raise PermissionError(13, 'Permission denied', str(tmp_path / 'b.json'))
        return real(name, *a, **k)
    monkeypatch.setattr(cli, 'find_record', find_record)
    assert main(['reproduce', 'c', '--out', str(tmp_path)]) == 1  # b is a dependency: its old record is looked for
    err = capsys.readouterr().err
    assert calls == [] and "b: failed (run): PermissionError: [Errno 13] Permission denied" in err and 'c: skipped' in err
