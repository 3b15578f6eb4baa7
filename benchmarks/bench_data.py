"""Benchmark of the dataset layer: the load time of every dataset present, first load in a process (checksums
not yet memoised) and second load, plus CIFAR-10's cold (decode) and warm (cache) load and `status_all` checksums.

Run from the repository root with the real data, e.g.

    ROBUSTML_DATA=/path/to/data python benchmarks/bench_data.py [--repeats 3] [--out bench_data.json]

Every cold CIFAR-10 load uses a fresh, empty cache folder (a temporary directory), so the timings are honest first
loads. "first" clears the in-process checksum memo before each call (what a new process pays); "again" is a second
call in the same process (the memo is warm). Timings are medians over `--repeats` runs.
"""
import argparse, json, os, platform, statistics, sys, tempfile, time, warnings

import numpy as np

import robustml.datasets as D
from robustml.datasets import expression, images, signals, tabular


def timed(fn):
    t0 = time.perf_counter(); out = fn(); return time.perf_counter() - t0, out


LOADERS = {  # dataset name -> a call that loads all of it the way the chapters do
    'mias': lambda: images.load_mias(size=256),
    'cinc2017': lambda: signals.load_cinc2017(),
    'golub': lambda: expression.load_golub(),
    'tcga-breast': lambda: expression.load_tcga_breast(('mrna', 'mirna')),
    'mammography': lambda: tabular.load_mammography(),
    'creditcard': lambda: tabular.load_creditcard(),
    'pancan': lambda: expression.load_pancan(),
    'cifar10': lambda: images.load_cifar10(),  # warm: the array cache is filled once before timing
}


def bench_loader(name: str, repeats: int) -> dict:
    "Median seconds of a first load (memo cleared) and of a second load in the same process."
    first, again = [], []
    LOADERS[name]()  # fill the OS page cache (and for CIFAR-10 the array cache) so every timed run reads warm files
    for _ in range(repeats):
        D._HASH_MEMO.clear()
        first.append(timed(LOADERS[name])[0])
        again.append(timed(LOADERS[name])[0])
    return dict(first_s=round(statistics.median(first), 3), again_s=round(statistics.median(again), 3),
                first_runs=[round(t, 3) for t in first])


def bench_cifar(workers: int, repeats: int) -> dict:
    "Cold (empty cache) and warm load times of CIFAR-10 with `workers` decoding processes."
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            os.environ['ROBUSTML_CACHE'] = cache
            D._HASH_MEMO.clear()
            t, arrays = timed(images.load_cifar10)
            cold.append(t)
            assert arrays[0].shape == (50000, 3, 32, 32) and arrays[2].shape == (10000, 3, 32, 32)
            D._HASH_MEMO.clear()  # a new process would hash the source (and the cached arrays) again: include it
            warm.append(timed(images.load_cifar10)[0])
    return dict(workers=workers, first_load_s=[round(t, 2) for t in cold], second_load_s=[round(t, 3) for t in warm])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--cifar-repeats', type=int, default=1)
    p.add_argument('--workers', type=int, nargs='*', default=[2])
    p.add_argument('--only', nargs='*', default=None, help='datasets to time (default: every one present)')
    p.add_argument('--out', default=None, help='write the results as JSON here')
    a = p.parse_args(argv)
    warnings.simplefilter('ignore')
    res = dict(machine=platform.platform(), cpus=images._cpus(), python=platform.python_version(),
               load_average=os.getloadavg() if hasattr(os, 'getloadavg') else None, loads={})
    old = os.environ.get('ROBUSTML_CACHE')
    try:
        with tempfile.TemporaryDirectory() as cache:
            os.environ['ROBUSTML_CACHE'] = cache
            for name in (a.only or LOADERS):
                if not D.have(name): res['loads'][name] = 'not present'; continue
                res['loads'][name] = bench_loader(name, a.repeats)
                print(name, res['loads'][name], flush=True)
        if 'cifar10' in (a.only or LOADERS) and D.have('cifar10') and a.cifar_repeats:
            orig = images.decode_images
            res['cifar10_cold'] = []
            for w in a.workers:
                images.decode_images = lambda blobs, workers=None, names=None, _w=w: orig(blobs, _w, **({"names": names} if names else {}))
                res['cifar10_cold'].append(bench_cifar(w, a.cifar_repeats))
            images.decode_images = orig
    finally:
        if old is None: os.environ.pop('ROBUSTML_CACHE', None)
        else: os.environ['ROBUSTML_CACHE'] = old
    D._HASH_MEMO.clear()
    t, rows = timed(lambda: D.status_all(verify=True))
    res['status_all_verify_s'] = round(t, 2)
    res['verified'] = {r['name']: r['verified'] for r in rows}
    print(json.dumps(res, indent=2))
    if a.out:
        with open(a.out, 'w') as f: json.dump(res, f, indent=2)


if __name__ == '__main__':
    main()
