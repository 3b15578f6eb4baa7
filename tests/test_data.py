"Tests of `robustml.datasets`: verified downloads, the search order, loaders on small fixtures and on the real data."
import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings, strategies as st
from PIL import Image

import robustml.datasets as D
from robustml.datasets import expression, images, signals, tabular
from robustml.datasets import ChecksumError, DataUnavailable, Form


def sha(b: bytes) -> str: return hashlib.sha256(b).hexdigest()


def tar_bytes(files: dict, gz=True) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode='w:gz' if gz else 'w') as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
    return bio.getvalue()


def leftovers(folder: Path) -> list:
    "Everything in `folder` (temporary .part files included)."
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def fake_registry(monkeypatch):
    "Replace the credit-card entry's download with one the test controls; returns a setter."
    def set_form(url, payload=None, **kw):
        f = Form('creditcard/creditcard.csv', 'csv', url=url, sha256=sha(payload) if payload is not None else None,
                 size=len(payload) if payload is not None else None, **kw)
        monkeypatch.setitem(D.DATASETS, 'creditcard', dataclasses.replace(D.DATASETS['creditcard'], forms=(f,)))
        return f
    return set_form


# ---------------------------------------------------------------- downloads

def test_download_verified(data_env, http_server, tmp_path):
    routes, base = http_server
    payload = os.urandom(3_000_000)
    routes['/f.bin'] = payload
    dest = tmp_path/'dl'/'f.bin'
    out = D.download_file(f'{base}/f.bin', dest, sha256=sha(payload), md5=hashlib.md5(payload).hexdigest(), size=len(payload))
    assert out == dest and dest.read_bytes() == payload and leftovers(dest.parent) == ['f.bin']


def test_download_wrong_checksum_leaves_nothing(data_env, http_server, tmp_path):
    routes, base = http_server
    routes['/f.bin'] = b'corrupt' * 1000
    dest = tmp_path/'dl'/'f.bin'
    with pytest.raises(ChecksumError, match='SHA256 mismatch'):
        D.download_file(f'{base}/f.bin', dest, sha256=sha(b'the original'))
    assert leftovers(dest.parent) == []
    with pytest.raises(ChecksumError, match='MD5 mismatch'):
        D.download_file(f'{base}/f.bin', dest, md5=hashlib.md5(b'x').hexdigest())
    assert leftovers(dest.parent) == []


def test_download_truncated_leaves_nothing(data_env, http_server, tmp_path):
    routes, base = http_server
    full = os.urandom(200_000)
    routes['/t.bin'] = (full[:50_000], len(full))  # the server announces 200 kB and sends 50 kB
    dest = tmp_path/'dl'/'t.bin'
    with pytest.raises(ChecksumError, match='truncated download'):
        D.download_file(f'{base}/t.bin', dest, sha256=sha(full))
    assert leftovers(dest.parent) == []


def test_download_size_and_structure_checks(data_env, http_server, tmp_path):
    routes, base = http_server
    routes['/a.bin'] = b'12345'
    with pytest.raises(ChecksumError, match='expected 6'):
        D.download_file(f'{base}/a.bin', tmp_path/'a.bin', size=6)
    routes['/x.tar.gz'] = tar_bytes({'mdb001.pgm': b'P5'})[:-40]  # a cut archive, no checksum published
    with pytest.raises(D.DataError, match='not a complete gzip'):
        D.download_file(f'{base}/x.tar.gz', tmp_path/'x.tar.gz', check=D._check_tar(r'mdb\d{3}\.pgm$'))
    routes['/z.zip'] = b'PK\x03\x04 not a zip'
    with pytest.raises(D.DataError, match='not a complete zip'):
        D.download_file(f'{base}/z.zip', tmp_path/'z.zip', check=D._check_zip('REFERENCE'))
    assert leftovers(tmp_path) == []


def test_download_file_url(tmp_path):
    src = tmp_path/'src.bin'; src.write_bytes(b'abc' * 100)
    out = D.download_file(src.as_uri(), tmp_path/'out'/'copy.bin', sha256=sha(src.read_bytes()))
    assert out.read_bytes() == src.read_bytes()


# ---------------------------------------------------------------- search order, fetch, offline

def test_fetch_downloads_into_cache_then_finds_it(data_env, http_server, fake_registry, monkeypatch):
    monkeypatch.delenv('ROBUSTML_OFFLINE')
    routes, base = http_server
    csv = ('Time,' + ','.join(f'V{i}' for i in range(1, 29)) + ',Amount,Class\n' +
           '0,' + ','.join(['0.5'] * 28) + ',1.5,"0"\n1,' + ','.join(['-1'] * 28) + ',20,"1"\n').encode()
    routes['/cc.csv'] = csv
    fake_registry(f'{base}/cc.csv', csv)
    assert not D.have('creditcard')
    p = D.fetch('creditcard')
    assert p == data_env/'creditcard'/'creditcard.csv' and p.read_bytes() == csv
    assert D.have('creditcard') and D.use_real('creditcard', 'course')
    st_ = D.status('creditcard')
    assert st_['where'] == 'cache' and st_['verified'] is True
    df = tabular.load_creditcard()
    assert df.shape == (2, 31) and df['Class'].tolist() == [0, 1] and df['Class'].dtype == np.int64
    p.write_bytes(csv.replace(b'20', b'21'))  # corrupt the cached copy
    assert D.status('creditcard')['verified'] is False
    with pytest.raises(ChecksumError): tabular.load_creditcard()


def test_fetch_corrupt_download_is_rejected(data_env, http_server, fake_registry, monkeypatch):
    monkeypatch.delenv('ROBUSTML_OFFLINE')
    routes, base = http_server
    routes['/cc.csv'] = b'tampered'
    fake_registry(f'{base}/cc.csv', b'original')
    with pytest.raises(ChecksumError): D.fetch('creditcard')
    assert leftovers(data_env/'creditcard') == [] and not D.have('creditcard')


def test_unreachable_download_raises_data_unavailable(data_env, fake_registry, monkeypatch):
    monkeypatch.delenv('ROBUSTML_OFFLINE')
    fake_registry('http://127.0.0.1:9/nothing.csv', b'x')  # port 9 (discard): connection refused
    with pytest.raises(DataUnavailable) as ei: D.fetch('creditcard')
    msg = str(ei.value)
    assert "'creditcard'" in msg and 'ROBUSTML_DATA' in msg and '127.0.0.1:9' in msg and str(data_env) in msg
    assert 'failed' in msg and leftovers(data_env/'creditcard') == []


def test_offline_message_and_use_real(data_env):
    assert D.use_real('creditcard', 'quick') is False
    for prof in ('course', 'paper'):
        with pytest.raises(DataUnavailable) as ei: D.use_real('creditcard', prof)
        msg = str(ei.value)
        assert 'creditcard' in msg and 'storage.googleapis.com' in msg and 'ROBUSTML_DATA' in msg and str(data_env) in msg
    with pytest.raises(DataUnavailable, match='cannot download'): D.find('golub')
    with pytest.raises(DataUnavailable) as ei: images.load_cifar10()
    assert 'cifar-10-binary.tar.gz' in str(ei.value) and isinstance(ei.value, FileNotFoundError)
    e2 = pickle.loads(pickle.dumps(ei.value))
    assert str(e2) == str(ei.value)
    assert D.use_real('iris', 'paper') and D.have('iris')


def test_search_order_robustml_data_before_cache(data_env, tmp_path, monkeypatch):
    root = tmp_path/'root'
    for base in (root, data_env):
        (base/'imbalanced').mkdir(parents=True)
        (base/'imbalanced'/'mammography.csv').write_text('X1,Class\n1.0,0\n')
    monkeypatch.setenv('ROBUSTML_DATA', str(root))
    hit = D.locate('mammography')
    assert hit[0] == root/'imbalanced'/'mammography.csv' and hit[1] == 'ROBUSTML_DATA'
    assert D.status('mammography')['verified'] is False  # not the registered file
    monkeypatch.setenv('ROBUSTML_DATA', str(tmp_path/'empty'))
    assert D.locate('mammography')[1] == 'cache'


def test_cache_dir_rules(monkeypatch, tmp_path):
    monkeypatch.delenv('ROBUSTML_CACHE', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'xdg'))
    assert D.cache_dir() == tmp_path/'xdg'/'robustml'
    monkeypatch.delenv('XDG_CACHE_HOME')
    assert D.cache_dir() == Path.home()/'.cache'/'robustml'
    monkeypatch.setenv('ROBUSTML_CACHE', str(tmp_path/'c'))
    assert D.cache_dir() == tmp_path/'c'


def test_unknown_names():
    with pytest.raises(KeyError, match='Registered datasets'): D.find('nope')
    with pytest.raises(KeyError): D.status_all(['cifar10', 'nope'])
    assert set(D.DATASETS) == {'cifar10', 'mias', 'cinc2017', 'creditcard', 'golub', 'tcga-breast', 'pancan', 'mammography', 'iris'}


# ---------------------------------------------------------------- CIFAR-10

def cifar_binary_archive(path: Path, n_per_batch=7, seed=0):
    "A small archive in the official binary layout; returns the arrays it holds."
    rng = np.random.default_rng(seed)
    files, xs, ys = {}, [], []
    for name in [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']:
        x = rng.integers(0, 256, (n_per_batch, 3, 32, 32), dtype=np.uint8); y = rng.integers(0, 10, n_per_batch).astype(np.uint8)
        files[f'cifar-10-batches-bin/{name}'] = np.concatenate([y[:, None], x.reshape(n_per_batch, -1)], 1).tobytes()
        xs.append(x); ys.append(y)
    files['cifar-10-batches-bin/batches.meta.txt'] = '\n'.join(images.CIFAR10_CLASSES).encode()
    path.write_bytes(tar_bytes(files))
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]).astype(np.int64), xs[5], ys[5].astype(np.int64)


def test_cifar_binary(data_env, tmp_path, monkeypatch):
    ref = cifar_binary_archive(tmp_path/'cifar-10-binary.tar.gz')
    got = images.load_cifar10(tmp_path/'cifar-10-binary.tar.gz')
    for a, b in zip(got, ref): assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all()
    assert got[0].shape == (35, 3, 32, 32) and got[1].dtype == np.int64
    # the second load comes from the cache: decoding must not run again
    monkeypatch.setattr(images, '_decode_cifar', lambda *a, **k: (_ for _ in ()).throw(AssertionError('decoded twice')))
    again = images.load_cifar10(tmp_path/'cifar-10-binary.tar.gz')
    assert all((a == b).all() for a, b in zip(again, ref))
    cached = list((data_env/'arrays').iterdir())
    assert sorted(p.name for p in cached if p.is_dir()) == [f"cifar10-{D._fingerprint(tmp_path/'cifar-10-binary.tar.gz')[:20]}"]
    assert not [p for p in cached if p.name.startswith('.')]  # no temporary folders left


def test_cifar_found_file_with_wrong_checksum_is_refused(data_env, tmp_path, monkeypatch):
    root = tmp_path/'root'; (root/'cifar10').mkdir(parents=True)
    cifar_binary_archive(root/'cifar10'/'cifar-10-binary.tar.gz')  # right name, not the published file
    monkeypatch.setenv('ROBUSTML_DATA', str(root))
    with pytest.raises(ChecksumError, match='published checksum'): images.load_cifar10()
    assert D.status('cifar10')['verified'] is False


def test_cifar_binary_rejects_bad_records(data_env, tmp_path):
    tmp_path.joinpath('bad.tar.gz').write_bytes(tar_bytes({'cifar-10-batches-bin/test_batch.bin': b'\x00' * 3072,
                                                          **{f'cifar-10-batches-bin/data_batch_{i}.bin': b'' for i in range(1, 6)}}))
    with pytest.raises(ValueError, match='3,073-byte'): images.load_cifar10(tmp_path/'bad.tar.gz', cache=False)


def image_tree(n_per_class=3, seed=0, fmt='PNG'):
    "Images for a {train,test}/<class>/NNNN tree: {relative path: encoded bytes} and {encoded bytes: (array, label)}."
    rng = np.random.default_rng(seed)
    files, truth = {}, {}
    for split, k in (('train', n_per_class), ('test', 1)):
        for c, cls in enumerate(images.CIFAR10_CLASSES):
            for i in range(k):
                a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                b = io.BytesIO(); Image.fromarray(a).save(b, fmt); b = b.getvalue()
                files[f'cifar10-jpeg/{split}/{cls}/{i:04d}.{fmt.lower()}'] = b
                truth[b] = (a, c, split)
    return files, truth


@pytest.mark.parametrize('layout', ['folder', 'tar.gz'])
def test_cifar_image_tree(data_env, tmp_path, layout):
    files, truth = image_tree()
    if layout == 'folder':
        for k, v in files.items(): (tmp_path/k).parent.mkdir(parents=True, exist_ok=True); (tmp_path/k).write_bytes(v)
        src = tmp_path/'cifar10-jpeg'
    else:
        src = tmp_path/'tree.tar.gz'; src.write_bytes(tar_bytes(files))
    xtr, ytr, xte, yte = images.load_cifar10(src, workers=1)
    assert xtr.shape == (30, 3, 32, 32) and xte.shape == (10, 3, 32, 32) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert np.bincount(ytr).tolist() == [3] * 10 and sorted(yte.tolist()) == list(range(10))
    lookup = {a.tobytes(): (c, s) for a, c, s in truth.values()}  # PNG is lossless: every pixel must match
    for x, y, s in [(x, y, 'train') for x, y in zip(xtr, ytr)] + [(x, y, 'test') for x, y in zip(xte, yte)]:
        assert lookup[x.transpose(1, 2, 0).tobytes()] == (y, s)


def test_cifar_tree_jpeg_fast_path_and_workers(data_env, tmp_path):
    files, truth = image_tree(n_per_class=450, fmt='JPEG')  # 4,600 images: enough for the parallel path
    src = tmp_path/'tree.tar.gz'; src.write_bytes(tar_bytes(files))
    one = images.load_cifar10(src, workers=1, cache=False)
    two = images.load_cifar10(src, workers=2, cache=False)
    assert all((a == b).all() for a, b in zip(one, two))
    ref = {np.asarray(Image.open(io.BytesIO(b)).convert('RGB')).tobytes() for b in truth}
    assert all(x.transpose(1, 2, 0).tobytes() in ref for x in one[2])


def test_cifar_tree_bad_class(data_env, tmp_path):
    src = tmp_path/'t.tar.gz'; src.write_bytes(tar_bytes({'x/train/unicorn/0000.png': b'x'}))
    with pytest.raises(ValueError, match='unicorn'): images.load_cifar10(src, cache=False)


def test_cifar_concurrent_first_loads(data_env, tmp_path):
    "Two processes load the same source with an empty cache: same arrays, one complete cache entry, no leftovers."
    files, _ = image_tree(n_per_class=20)
    src = tmp_path/'tree.tar.gz'; src.write_bytes(tar_bytes(files))
    code = textwrap.dedent(f"""
        import hashlib
        from robustml.datasets import images
        a = images.load_cifar10({str(src)!r}, workers=1)
        print(hashlib.sha256(b''.join(x.tobytes() for x in a)).hexdigest())
    """)
    env = {**os.environ, 'ROBUSTML_CACHE': str(data_env)}
    procs = [subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert outs[0][0] == outs[1][0]
    entries = [p for p in (data_env/'arrays').iterdir() if not p.name.endswith('.lock')]
    assert len(entries) == 1 and sorted(q.name for q in entries[0].iterdir()) == ['MANIFEST.json', 'x_test.npy', 'x_train.npy', 'y_test.npy', 'y_train.npy']
    for f in entries[0].glob('*.npy'): np.load(f, allow_pickle=False)


# ---------------------------------------------------------------- mini-MIAS

INFO = """MAMMOGRAPHIC IMAGE ANALYSIS SOCIETY
mdb001 G CIRC B 535 425 197
mdb002 F NORM 
mdb003 D CALC M *NOTE 3*
mdb003 D SPIC M 100 900 10
"""


def mias_images():
    rng = np.random.default_rng(0)
    return {f'mdb00{i}': rng.integers(0, 256, (1024, 1024), dtype=np.uint8) for i in (1, 2, 3)}


@pytest.mark.parametrize('layout', ['png-folder', 'pgm-archive'])
def test_mias(tmp_path, layout):
    imgs = mias_images()
    if layout == 'png-folder':
        src = tmp_path/'mias'; src.mkdir()
        for k, a in imgs.items(): Image.fromarray(a).save(src/f'{k}.png')
        (src/'Info.txt').write_text(INFO)
    else:
        def pgm(a): b = io.BytesIO(); Image.fromarray(a).save(b, 'PPM'); return b.getvalue()
        src = tmp_path/'all-mias.tar.gz'
        src.write_bytes(tar_bytes({**{f'{k}.pgm': pgm(a) for k, a in imgs.items()}, 'Info.txt': INFO.encode()}))
        assert pgm(imgs['mdb001'])[:2] == b'P5'
    m = images.load_mias(src)
    assert m.refs == ['mdb001', 'mdb002', 'mdb003'] and m.images.shape == (3, 1024, 1024) and m.images.dtype == np.uint8
    assert all((m.images[i] == imgs[r]).all() for i, r in enumerate(m.refs))  # lossless
    assert m.labels.tolist() == [1, 0, 2] and list(m.tissue) == ['G', 'F', 'D']
    les = m.lesions.set_index('ref')
    assert les.loc['mdb001', 'row'] == 1023 - 425 and les.loc['mdb001', 'col'] == 535
    small = images.load_mias(src, size=256, refs=['mdb001'])
    assert small.images.shape == (1, 256, 256) and small.lesions.row.tolist() == [round((1023 - 425)/4)]
    assert small.lesions.radius.tolist() == [round(197/4)]
    with pytest.raises(ValueError, match='mdb999'): images.load_mias(src, refs=['mdb999'])


def test_mias_info_parse_errors():
    with pytest.raises(ValueError): images.parse_mias_info('nothing here')
    with pytest.raises(ValueError): images.parse_mias_info('mdb001 Q CIRC B 1 2 3')


# ---------------------------------------------------------------- CinC 2017

def write_cinc(folder: Path, recs: dict, gain=1000):
    from scipy.io import savemat
    folder.mkdir(parents=True, exist_ok=True)
    for r, (code, x) in recs.items():
        savemat(folder/f'{r}.mat', {'val': x.astype(np.int16)[None, :]}, format='4')
        (folder/f'{r}.hea').write_text(f'{r} 1 300 {len(x)} 2014-05-08 05:05:15 \n{r}.mat 16+24 {gain}/mV 16 0 -127 0 0 ECG \n')
    (folder/'REFERENCE.csv').write_text(''.join(f'{r},{c}\n' for r, (c, _) in recs.items()))


@pytest.mark.parametrize('layout', ['folder', 'zip'])
def test_cinc2017(tmp_path, layout):
    rng = np.random.default_rng(0)
    recs = {'A00001': ('N', rng.integers(-500, 500, 2700)), 'A00002': ('~', rng.integers(-500, 500, 3300)),
            'A00003': ('A', rng.integers(-500, 500, 9000)), 'A00004': ('O', rng.integers(-500, 500, 2700))}
    write_cinc(tmp_path/'training2017', recs)
    src = tmp_path/'training2017'
    if layout == 'zip':
        src = tmp_path/'training2017.zip'
        with zipfile.ZipFile(src, 'w') as zf:
            for f in (tmp_path/'training2017').iterdir(): zf.write(f, f'training2017/{f.name}')
    e = signals.load_cinc2017(src)
    assert e.records == list(recs) and e.labels.tolist() == [0, 3, 1, 2] and e.fs == 300 and e.gain == 1000
    assert all(s.dtype == np.float32 and (s == recs[r][1]).all() for s, r in zip(e.signals, e.records))
    assert e.lengths.tolist() == [2700, 3300, 9000, 2700] and e.classes == ('Normal', 'AF', 'Other', 'Noisy')
    X, M = e.to_array(3000)
    assert X.shape == (4, 3000) and M[0].sum() == 2700 and M[2].sum() == 3000 and (X[0, 2700:] == 0).all()
    sub = e.subset([2, 0]); assert sub.records == ['A00003', 'A00001'] and sub.labels.tolist() == [1, 0]


def test_cinc2017_errors(tmp_path):
    write_cinc(tmp_path/'a', {'A00001': ('X', np.zeros(10))})
    with pytest.raises(ValueError, match="unknown label 'X'"): signals.load_cinc2017(tmp_path/'a')
    write_cinc(tmp_path/'b', {'A00001': ('N', np.zeros(10))}); (tmp_path/'b'/'A00001.mat').unlink()
    with pytest.raises(ValueError, match='missing'): signals.load_cinc2017(tmp_path/'b')
    assert signals.parse_header('A 1 300 9000\nA.mat 16+24 1000/mV 16 0 -127 0 0 ECG') == (300., 1000., 9000)
    assert signals.parse_header('A 1 250 10\nA.dat 16 200(5)/mV') == (250., 200., 10)


# ---------------------------------------------------------------- tabular / expression

def test_mammography_class_codings(tmp_path):
    for coding, expect in (([0, 1, 0], [0, 1, 0]), ([-1, 1, -1], [0, 1, 0]), (["'-1'", "'1'", "'-1'"], [0, 1, 0])):
        p = tmp_path/'m.csv'
        pd.DataFrame({'X1': [1., 2., 3.], 'X2': [0., 0., 1.], 'Class': coding}).to_csv(p, index=False)
        X, y = tabular.load_mammography(p)
        assert y.tolist() == expect and y.dtype == np.int64 and list(X.columns) == ['X1', 'X2'] and (X.dtypes == np.float64).all()
    pd.DataFrame({'X1': [1.], 'Class': [2]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match='neither'): tabular.load_mammography(p)


def test_mammography_from_imblearn_collection(tmp_path):
    b = io.BytesIO(); np.savez(b, data=np.arange(12.).reshape(4, 3), label=np.array([-1, 1, -1, -1])); b = b.getvalue()
    (tmp_path/'x25data.npz').write_bytes(b)
    (tmp_path/'bench.tar.gz').write_bytes(tar_bytes({'zenodo/x25data.npz': b, 'zenodo/x1data.npz': b'other'}))
    for src in ('x25data.npz', 'bench.tar.gz'):
        X, y = tabular.load_mammography(tmp_path/src)
        assert list(X.columns) == ['X1', 'X2', 'X3'] and X.iloc[1, 2] == 5 and y.tolist() == [0, 1, 0, 0]


def test_golub_order_and_labels(tmp_path):
    def golub_csv(ids):
        cols = ['Gene Description', 'Gene Accession Number'] + [c for i in ids for c in (str(i), 'call')]
        rows = [[f'probe {j}', f'P{j}'] + [v for i in ids for v in (i*10 + j, 'A')] for j in range(3)]
        return pd.DataFrame(rows, columns=cols).to_csv(index=False).replace('call.1', 'call').replace('call.2', 'call')
    (tmp_path/'data_set_ALL_AML_train.csv').write_text(golub_csv([2, 1, 3]))
    (tmp_path/'data_set_ALL_AML_independent.csv').write_text(golub_csv([5, 4]))
    (tmp_path/'actual.csv').write_text('patient,cancer\n1,ALL\n2,AML\n3,ALL\n4,AML\n5,ALL\n')
    g = expression.load_golub(tmp_path)
    assert list(g.X_train.index) == [1, 2, 3] and list(g.X_train.columns) == ['P0', 'P1', 'P2']
    assert g.X_train.loc[2, 'P1'] == 21 and g.y_train.tolist() == [0, 1, 0] and g.y_test.tolist() == [1, 0]


def test_tcga(tmp_path):
    for split, n in (('train', 4), ('test', 2)):
        sub = ['Basal', 'Her2', 'LumA', 'LumA'][:n]
        for omic, k in (('mrna', 3), ('mirna', 2)):
            df = pd.DataFrame(np.arange(n*k).reshape(n, k), columns=[f'{omic}{j}' for j in range(k)])
            df.insert(0, 'subtype', sub); df.insert(0, 'sample', [f'S{i}' for i in range(n)])
            df.to_csv(tmp_path/f'{split}_{omic}.csv', index=False)
    t = expression.load_tcga_breast(('mrna', 'mirna'), tmp_path)
    assert t.X_train.shape == (4, 5) and t.X_test.shape == (2, 5) and t.y_train.tolist() == [0, 1, 2, 2]
    assert list(t.X_train.columns[:1]) == ['mrna:mrna0']
    assert expression.load_tcga_breast('mrna', tmp_path).X_train.columns.tolist() == ['mrna0', 'mrna1', 'mrna2']
    prot = pd.DataFrame({'sample': [f'S{i}' for i in range(4)], 'subtype': ['Basal', 'Her2', 'LumA', 'LumA'], 'P1': [1., 2., 3., 4.]})
    prot.to_csv(tmp_path/'train_protein.csv', index=False)
    p = expression.load_tcga_breast('protein', tmp_path)
    assert p.X_train.shape == (4, 1) and p.X_test is None and p.y_test is None
    with pytest.raises(ValueError, match='unknown omics'): expression.load_tcga_breast('dna', tmp_path)


def test_iris():
    X, y, f, t = tabular.load_iris()
    assert X.shape == (150, 4) and X.dtype == np.float64 and y.dtype == np.int64 and np.bincount(y).tolist() == [50] * 3
    assert t == ['setosa', 'versicolor', 'virginica'] and len(f) == 4


# ---------------------------------------------------------------- subsets and stand-ins

@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 200), min_size=1, max_size=6), frac=st.floats(0.01, 1.2), seed=st.integers(0, 10))
@example(counts=[1, 1, 1, 1, 6], frac=0.5, seed=0)   # the floor takes two from the large class (found by hypothesis)
def test_stratified_subset_properties(counts, frac, seed):
    y = np.repeat(np.arange(len(counts)), counts)
    n = max(1, int(frac*len(y)))
    idx = D.stratified_subset(y, n, seed)
    assert len(idx) == min(n, len(y)) and len(np.unique(idx)) == len(idx) and (np.diff(idx) > 0).all()
    if n < len(y):
        got, quota = np.bincount(y[idx], minlength=len(counts)), np.array(counts)*n/len(y)
        # within rounding, plus what the one-per-class floor takes from the others: each class whose quota is below one
        # gets up to 1 - quota more than its share, and that comes out of the larger classes
        slack = (n >= len(counts)) * np.clip(1 - quota, 0, None).sum()
        assert (np.abs(got - quota) <= 1 + slack + 1e-9).all(), (got, quota)
        if n >= len(counts): assert (got >= 1).all()


def test_stratified_subset_bad_input():
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError): D.stratified_subset([0, 1], bad)
    with pytest.raises(ValueError, match='1-D'): D.stratified_subset(np.zeros((3, 2)), 2)


def test_synthetic_stand_ins():
    x, y = images.synthetic_images(50, n_classes=5, size=16, seed=1)
    assert x.shape == (50, 3, 16, 16) and x.dtype == np.uint8 and y.dtype == np.int64 and np.bincount(y).tolist() == [10] * 5
    assert (images.synthetic_images(50, n_classes=5, size=16, seed=1)[0] == x).all()
    s = signals.synthetic_ecg(12, length=3000, min_length=2700, seed=0)
    assert s.source == 'synthetic' and len(s) == 12 and s.gain == 1000 and s.fs == 300
    assert 2700 <= s.lengths.min() and s.lengths.max() <= 3000
    assert np.abs(s.signals[0]).max() > 300  # raw units: QRS about 1 mV = 1000 units
    e = expression.synthetic_expression(n_train=10, n_test=0, n_features=30, n_informative=5, seed=0)
    assert e.X_train.shape == (10, 30) and e.X_test is None and e.source == 'synthetic'
    X, y = tabular.synthetic_imbalanced(1000, n_features=4, minority=0.05)
    assert X.shape == (1000, 4) and y.sum() == 50 and list(X.columns) == ['X1', 'X2', 'X3', 'X4']
    cc = tabular.synthetic_creditcard(3000, seed=1)
    assert cc.shape == (3000, 31) and cc.Class.sum() >= 1
    for bad in (lambda: images.synthetic_images(0), lambda: signals.synthetic_ecg(0), lambda: signals.synthetic_ecg(4, length=100, min_length=200),
                lambda: tabular.synthetic_imbalanced(10, minority=1.5), lambda: tabular.synthetic_creditcard(10, fraud_rate=0)):
        with pytest.raises(ValueError): bad()


# ---------------------------------------------------------------- the real data (skipped when absent)

def test_real_status_all_verified(shared_data):
    rows = {r['name']: r for r in D.status_all()}
    for n in ('cifar10', 'mias', 'cinc2017', 'golub', 'tcga-breast', 'mammography'):
        assert rows[n]['found'] and rows[n]['where'] == 'ROBUSTML_DATA' and rows[n]['verified'] is True, rows[n]
    assert rows['iris']['found'] and (rows['creditcard']['found'] or not (shared_data/'creditcard').exists())


def test_real_cifar10(shared_data):
    "Uses the normal user cache, so a CI run decodes the shared JPEGs only once (notebooks and tests share it)."
    xtr, ytr, xte, yte = images.load_cifar10()
    assert xtr.shape == (50000, 3, 32, 32) and xte.shape == (10000, 3, 32, 32) and xtr.dtype == np.uint8
    assert ytr.dtype == np.int64 and (np.bincount(ytr) == 5000).all() and (np.bincount(yte) == 1000).all()

def test_real_cifar10_second_load_is_cached(shared_data, monkeypatch):
    "The second load comes from the array cache: decoding again would fail here."
    images.load_cifar10()
    monkeypatch.setattr(images, '_decode_cifar', lambda *a, **k: (_ for _ in ()).throw(AssertionError('decoded twice')))
    xtr, *_ = images.load_cifar10()
    assert xtr.shape == (50000, 3, 32, 32)


def test_real_small_sets(shared_data):
    e = signals.load_cinc2017()
    assert len(e) == 300 and np.bincount(e.labels).tolist() == [150, 50, 70, 30] and e.gain == 1000 and e.fs == 300
    X, y = tabular.load_mammography(); assert X.shape == (11183, 6) and y.sum() == 260
    g = expression.load_golub(); assert g.X_train.shape == (38, 7129) and g.X_test.shape == (34, 7129)
    assert int((np.r_[g.y_train, g.y_test] == 0).sum()) == 47
    t = expression.load_tcga_breast(); assert t.X_train.shape == (150, 200) and t.X_test.shape == (70, 200)
    p = expression.load_tcga_breast('protein'); assert p.X_train.shape == (150, 142) and p.X_test is None
    info = images.load_mias_info()
    assert info.ref.nunique() == 322 and len(info) == 330
    m = images.load_mias(refs=['mdb001'])
    assert m.lesions.row.tolist() == [1023 - 425] and m.images.shape == (1, 1024, 1024)


def test_checksums_ship_as_package_data():
    "The shared files' digests are a data file inside the package (read with importlib.resources), not a code literal."
    from importlib import resources
    text = resources.files('robustml.datasets').joinpath('SHA256SUMS').read_text()
    assert len(text.splitlines()) == len(D._SUMS) > 900
    assert D._SUMS['imbalanced/mammography.csv'] == D.get_dataset('mammography').forms[0].sha256


# ---------------------------------------------------------------- TCGA Pan-Cancer (UCI), not kept here: fixtures only

def _pancan_archive(n=6, classes=('PRAD', 'LUAD', 'BRCA', 'KIRC', 'COAD', 'BRCA'), label_ids=None) -> bytes:
    "A tar.gz laid out like UCI's TCGA-PANCAN-HiSeq-801x20531.tar.gz, with `n` samples and 3 genes."
    ids = [f'sample_{i}' for i in range(n)]
    data = pd.DataFrame(np.arange(3. * n).reshape(n, 3), index=ids, columns=['gene_0', 'gene_1', 'gene_2']).to_csv()
    labels = pd.DataFrame({'Class': list(classes)}, index=label_ids or ids).to_csv()
    top = 'TCGA-PANCAN-HiSeq-801x20531/'
    return tar_bytes({top + 'data.csv': data.encode(), top + 'labels.csv': labels.encode()})


def test_pancan_fetch_verify_load(data_env, http_server, monkeypatch):
    "The registered archive is downloaded into the cache, verified by its SHA-256, parsed once and cached; a corrupted copy is refused."
    monkeypatch.delenv('ROBUSTML_OFFLINE')
    routes, base = http_server
    payload = _pancan_archive(); routes['/p.tar.gz'] = payload
    form = dataclasses.replace(D.DATASETS['pancan'].forms[0], url=f'{base}/p.tar.gz', sha256=sha(payload))
    monkeypatch.setitem(D.DATASETS, 'pancan', dataclasses.replace(D.DATASETS['pancan'], forms=(form, *D.DATASETS['pancan'].forms[1:])))
    e = expression.load_pancan()
    assert (data_env/'pancan'/'TCGA-PANCAN-HiSeq-801x20531.tar.gz').read_bytes() == payload
    assert e.X_train.shape == (6, 3) and e.X_test is None and e.classes == expression.PANCAN_CLASSES
    assert e.y_train.tolist() == [4, 3, 0, 2, 1, 0] and e.X_train.loc['sample_1', 'gene_2'] == 5.
    again = expression.load_pancan()   # from the array cache
    assert again.X_train.equals(e.X_train) and (again.y_train == e.y_train).all()
    (data_env/'pancan'/'TCGA-PANCAN-HiSeq-801x20531.tar.gz').write_bytes(_pancan_archive(classes=('BRCA',) * 6))
    with pytest.raises(ChecksumError, match='published checksum'): expression.load_pancan()


def test_pancan_bad_tables_and_absent(data_env, tmp_path):
    bad = tmp_path/'mismatch.tar.gz'
    bad.write_bytes(_pancan_archive(label_ids=[f'sample_{i}' for i in range(6)][::-1]))
    with pytest.raises(ValueError, match='different samples'): expression.load_pancan(bad, cache=False)
    unknown = tmp_path/'unknown.tar.gz'; unknown.write_bytes(_pancan_archive(classes=('BRCA',) * 5 + ('GBM',)))
    with pytest.raises(ValueError, match="unknown tumour types \\['GBM'\\]"): expression.load_pancan(unknown, cache=False)
    with pytest.raises(DataUnavailable) as ei: expression.load_pancan()
    msg = str(ei.value)
    assert 'archive.ics.uci.edu' in msg and 'robustml data fetch pancan' in msg and 'ROBUSTML_OFFLINE' in msg
