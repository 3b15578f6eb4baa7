"""Benchmark of the dataset layer: CIFAR-10 first (decode) and second (cache) load, and `status_all` checksums.

Run from the repository root with the real data, e.g.

    ROBUSTML_DATA=/path/to/data python benchmarks/bench_data.py [--repeats 2] [--out bench_data.json]

Every cold load uses a fresh, empty cache folder (a temporary directory), so the timings are honest first loads.
"""
import argparse, json, os, platform, sys, tempfile, time

import numpy as np

import robustml.datasets as D
from robustml.datasets import expression, images, signals, tabular


def timed(fn):
    t0 = time.perf_counter(); out = fn(); return time.perf_counter() - t0, out


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
            D._HASH_MEMO.clear()  # a new process would hash the source again: include it
            warm.append(timed(images.load_cifar10)[0])
    return dict(workers=workers, first_load_s=[round(t, 2) for t in cold], second_load_s=[round(t, 3) for t in warm])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--workers', type=int, nargs='*', default=[1, 2])
    p.add_argument('--out', default=None, help='write the results as JSON here')
    a = p.parse_args(argv)
    if not D.have('cifar10'): sys.exit('bench_data: CIFAR-10 not found; set ROBUSTML_DATA')
    src = D.find('cifar10', download=False)
    res = dict(machine=platform.platform(), cpus=images._cpus(), python=platform.python_version(), source=str(src),
               source_mb=round(src.stat().st_size/1e6, 1), load_average=os.getloadavg() if hasattr(os, 'getloadavg') else None)
    old = os.environ.get('ROBUSTML_CACHE')
    try:
        orig = images.decode_images
        res['cifar10'] = []
        for w in a.workers:
            images.decode_images = lambda blobs, workers=None, _w=w: orig(blobs, _w)
            res['cifar10'].append(bench_cifar(w, a.repeats))
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
