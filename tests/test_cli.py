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
    assert 'checksum mismatch' in err and 'golub' in err
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
