"""PGD-10 on a CIFAR-sized CNN: robustml.attacks.pgd against its floor (10 forward+backward passes) and against ART.

Run (on a quiet machine; on the shared course machine wrap it in the heavy-job lock):

    flock /tmp/robustml-heavy.lock python benchmarks/bench_pgd.py

The model is the CIFAR study's 4-block CNN (3-64-128-256-512 convs with BatchNorm and max-pooling, then
2048-1024-512-10 fully connected) behind a `Normalize` layer, in eval mode, with random weights (the timing does not
depend on the weights). The batch is random pixels in [0, 1]. Every figure is the median of `--reps` timed rounds; the functions are
timed in interleaved rounds and both wall-clock and process CPU time are reported (CPU time is less sensitive to other load).
"""
from __future__ import annotations
import argparse, json, platform, statistics, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustml.attacks import Normalize, pgd


def seed_cnn(n_classes: int = 10) -> nn.Sequential:
    "The CIFAR-FGSM study's 4-block CNN, with normalisation as its first layer."
    blocks, c = [], 3
    for o in (64, 128, 256, 512):
        blocks += [nn.Conv2d(c, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]; c = o
    return nn.Sequential(Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)), *blocks, nn.Flatten(),
                         nn.Linear(2048, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 512), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(512, n_classes))


def clocks() -> tuple[float, float]:
    "(wall, process CPU) seconds."
    return time.perf_counter(), time.process_time()


def measure(fns: dict, rounds: int) -> dict:
    """Interleaved timing: each round runs every function once, so that load from other processes hits all of them
    alike. Returns, per name, the median wall and CPU (process) seconds over the rounds. One warm-up call of the
    single forward+backward functions first (the attacks consist of such calls, so they are warm too)."""
    for k, f in fns.items():
        if k.startswith('fb_'): f()
    out = {k: {'wall': [], 'cpu': []} for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            w0, c0 = clocks(); f(); w1, c1 = clocks()
            out[k]['wall'].append(w1 - w0); out[k]['cpu'].append(c1 - c0)
    return {k: {'wall': statistics.median(v['wall']), 'cpu': statistics.median(v['cpu']), 'wall_runs': v['wall']} for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batch', type=int, default=256)
    ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--reps', type=int, default=3, help='timed rounds (after one warm-up call of each function)')
    ap.add_argument('--eps', type=float, default=8 / 255)
    ap.add_argument('--alpha', type=float, default=2 / 255)
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    ap.add_argument('--no-art', action='store_true', help='skip the ART comparison')
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = seed_cnn().eval()
    x = torch.rand(a.batch, 3, 32, 32); y = torch.randint(0, 10, (a.batch,))

    def fb_input():  # the attack's floor: forward + backward to the input only
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xr), y, reduction='sum'), xr)

    def fb_full():  # a training-style forward + backward (parameter gradients too)
        xr = x.clone().requires_grad_(True)
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xr), y).backward()

    def ours(): pgd(model, x, y, a.eps, a.alpha, a.steps)

    fns = {'fb_input': fb_input, 'fb_full': fb_full, 'pgd': ours}
    if not a.no_art:
        from art.estimators.classification import PyTorchClassifier
        from art.attacks.evasion import ProjectedGradientDescent
        clf = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10, clip_values=(0., 1.))
        att = ProjectedGradientDescent(clf, norm=np.inf, eps=a.eps, eps_step=a.alpha, max_iter=a.steps, num_random_init=1,
                                       batch_size=a.batch, verbose=False)
        xn, yn = x.numpy(), y.numpy()
        fns['art'] = lambda: (att.generate(xn, y=yn), model.eval())
    t = measure(fns, a.reps)
    res = {'machine': f"{platform.machine()}, {torch.get_num_threads()} torch threads", 'torch': torch.__version__,
           'batch': a.batch, 'steps': a.steps, 'rounds': a.reps, 'timings': t}
    for clock in ('wall', 'cpu'):
        res[f'{clock}: pgd / ({a.steps} x fwd+bwd to input)'] = t['pgd'][clock] / (a.steps * t['fb_input'][clock])
        res[f'{clock}: pgd / ({a.steps} x fwd+full bwd)'] = t['pgd'][clock] / (a.steps * t['fb_full'][clock])
        if 'art' in t: res[f'{clock}: art / pgd'] = t['art'][clock] / t['pgd'][clock]
    rnd = lambda v: round(v, 4) if isinstance(v, float) else ({k: rnd(w) for k, w in v.items()} if isinstance(v, dict) else ([rnd(w) for w in v] if isinstance(v, list) else v))
    print(json.dumps(rnd(res), indent=1))
    return res


if __name__ == '__main__': main()
