"""Data you can trust (issue 23): every loader checks what it reads, bad files give one error type naming the file,
`check` lists every bad file, archives refuse crafted members, the array cache detects tampering.

Every test builds small fixture files under tmp_path and, where the registry matters, a fake registry entry whose
checksums are those of the fixtures (monkeypatched), with ROBUSTML_DATA pointing at the fixture root."""
import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import robustml.datasets as D
from robustml.datasets import ChecksumError, DataError, DataUnavailable, Form, expression, images, signals, tabular


def sha(b: bytes) -> str: return hashlib.sha256(b).hexdigest()


def register(monkeypatch, root: Path, name: str, rel: str, files: dict, fmt: str, marker: str|None=None):
    "Write `files` under root/rel and register them as dataset `name`'s only form, with their checksums; ROBUSTML_DATA=root."
    base = root/rel
    for k, v in files.items():
        (base/k).parent.mkdir(parents=True, exist_ok=True); (base/k).write_bytes(v)
    form = Form(rel, fmt, marker=marker, sha256={k: sha(v) for k, v in files.items()} if marker else None)
    monkeypatch.setitem(D.DATASETS, name, dataclasses.replace(D.DATASETS[name], forms=(form,)))
    monkeypatch.setenv('ROBUSTML_DATA', str(root))
    return base


def register_file(monkeypatch, root: Path, name: str, rel: str, data: bytes, fmt: str):
    "Write one file at root/rel and register it (with its SHA-256) as dataset `name`'s only form."
    (root/rel).parent.mkdir(parents=True, exist_ok=True); (root/rel).write_bytes(data)
    monkeypatch.setitem(D.DATASETS, name, dataclasses.replace(D.DATASETS[name], forms=(Form(rel, fmt, sha256=sha(data)),)))
    monkeypatch.setenv('ROBUSTML_DATA', str(root))
    return root/rel


def png(a: np.ndarray) -> bytes:
    b = io.BytesIO(); Image.fromarray(a).save(b, 'PNG'); return b.getvalue()


def film(i: int) -> np.ndarray:
    "A 1024x1024 grey test film that compresses well (a gradient plus a bright square)."
    a = np.add.outer(np.arange(1024), np.arange(1024)).astype(np.uint8) // 2
    a[100*i:100*i + 50, 200:250] = 255
    return a


INFO = b"MIAS\nmdb001 G CIRC B 535 425 197\nmdb002 F NORM \nmdb003 D CALC M 100 900 10\n"


def mias_files():
    return {'Info.txt': INFO, **{f'mdb00{i}.png': png(film(i)) for i in (1, 2, 3)}}


def tar_bytes(files: dict) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode='w:gz') as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name); ti.size = len(data); tf.addfile(ti, io.BytesIO(data))
    return bio.getvalue()


# ---------------------------------------------------------------- the error type

def test_data_error_names_dataset_file_problem_and_fix():
    e = ChecksumError('its SHA-256 does not match the registered checksum', 'mias', '/d/mias/mdb002.png')
    msg = str(e)
    assert isinstance(e, DataError) and isinstance(e, ValueError)
    assert msg.startswith("Dataset 'mias', file /d/mias/mdb002.png: its SHA-256")
    assert 'Fix: replace /d/mias/mdb002.png' in msg and 'robustml data fetch mias' in msg
    assert str(pickle.loads(pickle.dumps(e))) == msg
    assert 'robustml data fetch golub' in str(DataError('x', 'golub', 'a.csv'))  # not downloadable: fetch checks a copy put in place


def test_unknown_and_builtin_names(data_env):
    with pytest.raises(KeyError, match='Registered datasets: cifar10'): D.get_dataset('nope')
    with pytest.raises(ValueError, match='Registered datasets'): D.check('nope')  # also a ValueError, for the CLI
    assert str(pytest.raises(D.UnknownDataset, D.fetch, 'nope').value).startswith("Unknown dataset 'nope'")
    assert D.get_dataset('iris').builtin and D.check('iris') == []
    with pytest.raises(ValueError, match='nothing to fetch. Datasets with files: cifar10, mias'): D.fetch('iris')
    with pytest.raises(DataUnavailable): D.check('golub')  # not present at all


# ---------------------------------------------------------------- tabular: a column removed, a value changed, text in a number

def mammo_csv(**change) -> bytes:
    df = pd.DataFrame({'X1': [0.1, 0.2, 0.3, 0.4], 'X2': [1., 2., 3., 4.], 'Class': [0, 0, 1, 0]})
    for k, v in change.items(): df = v(df)
    return df.to_csv(index=False).encode()


@pytest.mark.parametrize('edit', ['column removed', 'value changed', 'label flipped'])
def test_mammography_changed_csv_is_refused(data_env, tmp_path, monkeypatch, edit):
    p = register_file(monkeypatch, tmp_path/'root', 'mammography', 'imbalanced/mammography.csv', mammo_csv(), 'csv')
    X, y = tabular.load_mammography()
    assert X.shape == (4, 2) and y.tolist() == [0, 0, 1, 0] and D.check('mammography') == []
    bad = {'column removed': lambda d: d.drop(columns='X2'), 'value changed': lambda d: d.assign(X1=[0.1, 0.2, 0.3, 0.5]),
           'label flipped': lambda d: d.assign(Class=[0, 1, 1, 0])}[edit]
    p.write_bytes(mammo_csv(x=bad))
    with pytest.raises(ChecksumError) as ei: tabular.load_mammography()
    assert str(p) in str(ei.value) and "'mammography'" in str(ei.value) and 'robustml data fetch mammography' in str(ei.value)
    assert D.check('mammography') == [f'{p}: SHA-256 does not match the registered checksum (corrupt or not the original)']
    assert D.verify('mammography') is False
    with pytest.raises(DataError, match='fails verification'): D.fetch('mammography')  # `data fetch` never reports success on it


def test_corrupt_csv_gives_data_error_naming_file_and_value(tmp_path):
    p = tmp_path/'m.csv'; p.write_text('X1,X2,Class\n0.1,1,0\nabc,2,1\n')
    with pytest.raises(DataError) as ei: tabular.load_mammography(p)
    assert str(p) in str(ei.value) and "column 'X1', data row 2 holds 'abc', not a number" in str(ei.value)
    p.write_text('X1,Class\n0.1,0\n0.2,maybe\n')
    with pytest.raises(DataError, match="'maybe' is not a class label"): tabular.load_mammography(p)
    p.write_bytes(b'\x00\x01\x02')
    with pytest.raises(DataError, match='m.csv'): tabular.load_mammography(p)


# ---------------------------------------------------------------- expression: a gene removed, flipped labels

def tcga_files(drop_gene_in_train=False) -> dict:
    out = {}
    for split, n in (('train', 4), ('test', 2)):
        k = 2 if (drop_gene_in_train and split == 'train') else 3
        df = pd.DataFrame(np.arange(n*k, dtype=float).reshape(n, k), columns=[f'g{j}' for j in range(k)])
        df.insert(0, 'subtype', ['Basal', 'Her2', 'LumA', 'LumA'][:n]); df.insert(0, 'sample', [f'S{i}' for i in range(n)])
        out[f'{split}_mrna.csv'] = df.to_csv(index=False).encode()
    return out


def test_tcga_gene_removed(data_env, tmp_path, monkeypatch):
    base = register(monkeypatch, tmp_path/'root', 'tcga-breast', 'tcga-breast', tcga_files(), 'tcga-csv', marker='train_mrna.csv')
    t = expression.load_tcga_breast()
    assert t.X_train.shape == (4, 3) and t.X_test.shape == (2, 3)
    (base/'train_mrna.csv').write_bytes(tcga_files(drop_gene_in_train=True)['train_mrna.csv'])
    with pytest.raises(ChecksumError, match='train_mrna.csv'): expression.load_tcga_breast()
    assert len(D.check('tcga-breast')) == 1
    # the same tables as a folder of one's own (no registry): the structural check catches 199 genes against 200
    own = tmp_path/'own'; own.mkdir()
    for f in base.iterdir(): (own/f.name).write_bytes(f.read_bytes())
    with pytest.raises(DataError, match='train has 2 features, test 3'): expression.load_tcga_breast(path=own)


def golub_files(labels='ALL,AML,ALL') -> dict:
    def table(ids):
        cols = ['Gene Description', 'Gene Accession Number'] + [c for i in ids for c in (str(i), 'call')]
        rows = [[f'probe {j}', f'P{j}'] + [v for i in ids for v in (i*10 + j, 'A')] for j in range(3)]
        return pd.DataFrame(rows, columns=cols).to_csv(index=False).encode()
    lab = labels.split(',')
    return {'data_set_ALL_AML_train.csv': table([1, 2]), 'data_set_ALL_AML_independent.csv': table([3]),
            'actual.csv': ('patient,cancer\n' + ''.join(f'{i},{c}\n' for i, c in enumerate(lab, 1))).encode()}


def test_golub_flipped_labels(data_env, tmp_path, monkeypatch):
    base = register(monkeypatch, tmp_path/'root', 'golub', 'golub', golub_files(), 'golub-csv', marker='actual.csv')
    g = expression.load_golub()
    assert g.y_train.tolist() == [0, 1] and g.y_test.tolist() == [0]
    (base/'actual.csv').write_bytes(golub_files('AML,ALL,ALL')['actual.csv'])  # same size, labels swapped
    with pytest.raises(ChecksumError) as ei: expression.load_golub()
    assert str(base/'actual.csv') in str(ei.value) and "Dataset 'golub'" in str(ei.value)
    (base/'data_set_ALL_AML_train.csv').write_text('Gene Accession Number,1\nP0,abc\n')
    problems = D.check('golub')
    assert [p.split(':')[0] for p in problems] == [str(base/'data_set_ALL_AML_train.csv'), str(base/'actual.csv')]
    own = tmp_path/'own'; own.mkdir()                                    # a folder of one's own: the value is named
    for k, v in golub_files().items(): (own/k).write_bytes(v)
    (own/'data_set_ALL_AML_train.csv').write_text((own/'data_set_ALL_AML_train.csv').read_text().replace(',10,', ',abc,', 1))
    with pytest.raises(DataError, match="data_set_ALL_AML_train.csv: column '1', data row 1 holds 'abc'"): expression.load_golub(own)


# ---------------------------------------------------------------- signals: a flipped label, a corrupt .mat

def cinc_files(labels=('N', 'A')) -> dict:
    from scipy.io import savemat
    out = {}
    for k, code in enumerate(labels, 1):
        r = f'A{k:05d}'; x = (np.arange(300) * k % 200 - 100).astype(np.int16)
        b = io.BytesIO(); savemat(b, {'val': x[None, :]}, format='4'); out[f'{r}.mat'] = b.getvalue()
        out[f'{r}.hea'] = f'{r} 1 300 300 2014-05-08 05:05:15 \n{r}.mat 16+24 1000/mV 16 0 -127 0 0 ECG \n'.encode()
    out['REFERENCE.csv'] = ''.join(f'A{k:05d},{c}\n' for k, c in enumerate(labels, 1)).encode()
    return out


def test_cinc_flipped_label_and_corrupt_mat(data_env, tmp_path, monkeypatch):
    base = register(monkeypatch, tmp_path/'root', 'cinc2017', 'cinc2017/validation', cinc_files(), 'wfdb-folder', marker='REFERENCE.csv')
    assert signals.load_cinc2017().labels.tolist() == [0, 1]
    (base/'REFERENCE.csv').write_bytes(cinc_files(('A', 'N'))['REFERENCE.csv'])
    with pytest.raises(ChecksumError, match='REFERENCE.csv'): signals.load_cinc2017()
    # a folder of one's own with a damaged record: the error names the file, not scipy's 'Unknown mat file type'
    own = tmp_path/'own'; own.mkdir()
    for k, v in cinc_files().items(): (own/k).write_bytes(v)
    (own/'A00002.mat').write_bytes(b'\xff' * 100)
    with pytest.raises(DataError) as ei: signals.load_cinc2017(own)
    assert str(own/'A00002.mat') in str(ei.value) and 'not a readable MATLAB file' in str(ei.value)
    (own/'A00002.mat').write_bytes(cinc_files()['A00002.mat']); (own/'A00002.hea').write_text('A00002 1 fast 300\n')
    with pytest.raises(DataError, match='A00002.hea'): signals.load_cinc2017(own)


def test_cinc_zip_refuses_escaping_names_and_absurd_sizes(tmp_path):
    z = tmp_path/'training2017.zip'
    with zipfile.ZipFile(z, 'w') as zf: zf.writestr('../evil/REFERENCE.csv', 'A00001,N\n')
    with pytest.raises(DataError, match="escapes the archive's folder"): signals.load_cinc2017(z)
    with pytest.raises(DataError, match='escapes'): D._check_zip('REFERENCE')(z)
    with zipfile.ZipFile(z, 'w', zipfile.ZIP_DEFLATED) as zf: zf.writestr('training2017/REFERENCE.csv', 'A00001,N\n')
    raw = bytearray(z.read_bytes()); cd = raw.rfind(b'PK\x01\x02')
    raw[cd + 24:cd + 28] = (2**31).to_bytes(4, 'little')  # the central directory now claims 2 GiB uncompressed
    z.write_bytes(bytes(raw))
    with pytest.raises(DataError, match='not a plausible size'): signals.load_cinc2017(z)


# ---------------------------------------------------------------- images: an all-black film, an extra film, a corrupt file

def test_mias_black_film_extra_film_and_check(data_env, tmp_path, monkeypatch):
    base = register(monkeypatch, tmp_path/'root', 'mias', 'mias', mias_files(), 'mias-folder', marker='Info.txt')
    m = images.load_mias(size=256)
    assert m.refs == ['mdb001', 'mdb002', 'mdb003'] and D.check('mias') == [] and D.verify('mias') is True
    (base/'mdb999.png').write_bytes(png(film(4)))                       # an extra film the registry does not list
    with pytest.warns(UserWarning, match='mdb999.png'): m = images.load_mias(size=256)
    assert m.refs == ['mdb001', 'mdb002', 'mdb003']                      # ignored, never loaded
    with pytest.raises(ValueError, match='mdb999'): images.load_mias(refs=['mdb999'])
    assert D.check('mias') == [f'{base/"mdb999.png"}: not in the registry (an unlisted file is never loaded; remove it)']
    assert D.verify('mias') is False and D.status('mias')['verified'] is False
    (base/'mdb002.png').write_bytes(png(np.zeros((1024, 1024), np.uint8)))  # a valid, all-black PNG
    with pytest.raises(ChecksumError) as ei: images.load_mias(refs=['mdb002'])
    assert str(base/'mdb002.png') in str(ei.value)
    images.load_mias(refs=['mdb001'])                                    # films that are intact still load on their own
    (base/'mdb003.png').unlink()
    problems = D.check('mias')                                           # every bad file, one line each
    assert len(problems) == 3 and 'mdb002.png: SHA-256 does not match' in problems[0]
    assert 'mdb003.png: missing' in problems[1] and 'mdb999.png: not in the registry' in problems[2]
    with pytest.raises(DataError, match='3 bad file'): D.fetch('mias')


def test_corrupt_image_names_the_file(tmp_path):
    own = tmp_path/'films'; own.mkdir()
    for k, v in mias_files().items(): (own/k).write_bytes(v)
    (own/'mdb002.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 50)
    with pytest.raises(DataError) as ei: images.load_mias(own)
    assert str(own/'mdb002.png') in str(ei.value) and 'BytesIO' not in str(ei.value)
    (own/'mdb002.png').write_bytes(png(np.zeros((10, 10), np.uint8)))
    with pytest.raises(DataError, match='expected 1024x1024'): images.load_mias(own)
    with pytest.raises(DataError, match='image 0|x.png'): images.decode_image(b'not an image', where='x.png')


def test_cut_archive_names_the_file(tmp_path):
    p = tmp_path/'all-mias.tar.gz'; p.write_bytes(tar_bytes({'mdb001.pgm': b'P5 x' * 1000, 'Info.txt': INFO})[:-60])
    with pytest.raises(DataError) as ei: images.load_mias(p)
    assert str(p) in str(ei.value) and 'gzip' in str(ei.value)


# ---------------------------------------------------------------- crafted tar archives

def header(name: str, size_field: bytes, kind: bytes=b'0', link: str='') -> bytes:
    "A ustar header with a raw size field and a correct checksum."
    h = bytearray(512); h[:len(name)] = name.encode(); h[100:108] = b'0000644\0'
    h[124:136] = size_field.ljust(12, b'\0')[:12]; h[156:157] = kind; h[157:157 + len(link)] = link.encode()
    h[257:263] = b'ustar\0'; h[148:156] = b' ' * 8; h[148:156] = f'{sum(h):06o}\0 '.encode()
    return bytes(h)


@pytest.mark.parametrize('hdr, words', [
    (header('x25data.npz', b'\xff' * 12), 'declares -1 bytes'),                       # base-256 -1: used to loop forever
    (header('x25data.npz', b'-0000001000'), 'not a number'),                           # an octal field with a minus sign
    (header('x25data.npz', b'77777777777'), 'crafted or cut'),                          # 8 GiB in a 1.5 kB archive
    (header('x25data.npz', b'00000000000', b'2', '/etc/passwd'), 'symbolic link'),
    (header('x25data.npz', b'00000000000', b'1', 'other'), 'hard link'),
    (header('dev', b'00000000000', b'3'), 'character device'),
    (b'garbage!' * 64, 'checksum'),
])
def test_crafted_tar_is_refused(tmp_path, hdr, words):
    p = tmp_path/'bench.tar'; p.write_bytes(hdr + bytes(1024))
    with pytest.raises(DataError) as ei: tabular.load_mammography(p)
    assert words in str(ei.value) and str(p) in str(ei.value)
    with pytest.raises(DataError, match=words.split()[0]): D._check_tar(r'x25data\.npz$')(p)


def test_tar_symlink_member_made_by_tarfile_is_refused(tmp_path):
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode='w:gz') as tf:
        ti = tarfile.TarInfo('zenodo/x25data.npz'); ti.type = tarfile.SYMTYPE; ti.linkname = '/etc/shadow'; tf.addfile(ti)
    p = tmp_path/'bench.tar.gz'; p.write_bytes(bio.getvalue())
    with pytest.raises(DataError, match="'zenodo/x25data.npz' is a symbolic link"): tabular.load_mammography(p)


# ---------------------------------------------------------------- the array cache

def cifar_archive(path: Path, seed=0):
    rng = np.random.default_rng(seed); files = {}
    for name in [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']:
        x = rng.integers(0, 256, (3, 3073), dtype=np.uint8); x[:, 0] %= 10
        files[f'cifar-10-batches-bin/{name}'] = x.tobytes()
    path.write_bytes(tar_bytes(files))


def test_tampered_cache_is_rebuilt_and_changed_source_is_rekeyed(data_env, tmp_path):
    src = tmp_path/'c.tar.gz'; cifar_archive(src)
    ref = images.load_cifar10(src)
    entry = next(p for p in (data_env/'arrays').iterdir() if p.is_dir())
    assert (entry/'MANIFEST.json').is_file()
    np.save(entry/'y_test.npy', np.zeros_like(ref[3]))  # replace the cached labels with zeros
    with pytest.warns(UserWarning, match='y_test.npy does not match the SHA-256 in its manifest'):
        again = images.load_cifar10(src)
    assert all((a == b).all() for a, b in zip(again, ref)) and (ref[3] != 0).any()
    with warnings.catch_warnings(): warnings.simplefilter('error'); images.load_cifar10(src)  # the rebuilt entry is clean
    cifar_archive(src, seed=1)                                # the source changes: a new key, never the old arrays
    new = images.load_cifar10(src)
    assert not (new[0] == ref[0]).all() and len([p for p in (data_env/'arrays').iterdir() if p.is_dir()]) == 2


def test_registered_archive_is_checked_before_the_cache(data_env, tmp_path, monkeypatch):
    root = tmp_path/'root'; (root/'cifar10').mkdir(parents=True)
    cifar_archive(root/'cifar10'/'cifar10-jpeg.tar.gz')
    data = (root/'cifar10'/'cifar10-jpeg.tar.gz').read_bytes()
    register_file(monkeypatch, root, 'cifar10', 'cifar10/cifar10-jpeg.tar.gz', data, 'image-tree')
    images.load_cifar10()
    cifar_archive(root/'cifar10'/'cifar10-jpeg.tar.gz', seed=1)
    with pytest.raises(ChecksumError, match='published checksum'): images.load_cifar10()


# ---------------------------------------------------------------- the real data (skipped when absent)

def test_real_data_checks_clean(shared_data):
    for name, d in D.DATASETS.items():
        if d.builtin or not D.have(name): continue
        assert D.check(name) == [], name
        assert D.verify(name) is True, name
