"""APGD-CE and Square on a CIFAR-sized CNN: robustml.attacks against their floors and against ART.

Run (on a quiet machine; on the shared course machine wrap it in the heavy-job lock):

    flock /tmp/robustml-heavy.lock python benchmarks/bench_apgd.py --threads 1

Model and batch as in `bench_pgd.py` (the CIFAR study's 4-block CNN behind `Normalize`, eval mode, random weights;
random pixels, labelled with the model's own predictions so that no example is skipped). APGD: L-inf, eps 8/255, CE loss, `--steps` iterations, one run; its floor is `steps` x (one forward +
backward to the input). Square: L-inf, eps 8/255, `--queries` queries, p_init 0.8; its floor is `queries` x one
forward pass of the batch (an upper bound on the floor: Square stops querying the examples it has fooled). ART 1.20.1
`AutoProjectedGradientDescent` and `SquareAttack` with the same settings on a `PyTorchClassifier`. Medians over
`--reps` interleaved rounds; wall-clock and process CPU time.
"""
from __future__ import annotations
import argparse, json, platform, sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from bench_pgd import measure, seed_cnn  # noqa: E402
from robustml.attacks import apgd, square  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--steps', type=int, default=100)
    ap.add_argument('--queries', type=int, default=100)
    ap.add_argument('--reps', type=int, default=1)
    ap.add_argument('--eps', type=float, default=8 / 255)
    ap.add_argument('--threads', type=int, default=None)
    ap.add_argument('--no-art', action='store_true')
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = seed_cnn().eval()
    x = torch.rand(a.batch, 3, 32, 32)
    with torch.no_grad(): y = model(x).argmax(1)  # labels the model gets right: every example is attacked every step

    def fb_input():
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xr), y, reduction='sum'), xr)

    def fwd():
        with torch.no_grad(): model(x)

    fns = {'fb_input': fb_input, 'fb_forward': fwd,
           'apgd': lambda: apgd(model, x, y, a.eps, a.steps),
           'square': lambda: square(model, x, y, a.eps, a.queries)}
    if not a.no_art:
        import numpy as np
        from art.estimators.classification import PyTorchClassifier
        from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack
        clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
                                clip_values=(0., 1.), device_type='cpu')
        xa, ya = x.numpy(), y.numpy()
        art_apgd = AutoProjectedGradientDescent(clf, norm=np.inf, eps=a.eps, eps_step=2 * a.eps, max_iter=a.steps,
                                                nb_random_init=1, batch_size=a.batch, loss_type='cross_entropy', verbose=False)
        art_sq = SquareAttack(clf, norm=np.inf, eps=a.eps, max_iter=a.queries, p_init=0.8, nb_restarts=1,
                              batch_size=a.batch, verbose=False)
        fns['art_apgd'] = lambda: art_apgd.generate(xa, y=ya)
        fns['art_square'] = lambda: art_sq.generate(xa, y=ya)
    m = measure(fns, a.reps)
    out = {'machine': platform.machine(), 'threads': torch.get_num_threads(), 'batch': a.batch, 'steps': a.steps,
           'queries': a.queries, **{k: {'wall': round(v['wall'], 3), 'cpu': round(v['cpu'], 3)} for k, v in m.items()}}
    for c in ('wall', 'cpu'):
        out[f'apgd_over_floor_{c}'] = round(m['apgd'][c] / (a.steps * m['fb_input'][c]), 3)
        out[f'square_over_floor_{c}'] = round(m['square'][c] / (a.queries * m['fb_forward'][c]), 3)
        if not a.no_art:
            out[f'art_apgd_over_ours_{c}'] = round(m['art_apgd'][c] / m['apgd'][c], 3)
            out[f'art_square_over_ours_{c}'] = round(m['art_square'][c] / m['square'][c], 3)
    print(json.dumps(out, indent=1))


if __name__ == '__main__': main()
