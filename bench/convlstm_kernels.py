"""Benchmark: the kernel choices inside StudentNet's ConvLSTM layer, shape by shape.

For every recurrent-conv shape of the default (3x1x6) and paper (3x3x12) students at 112 px
(batch 2, as a training step), one run prints side by side, in ms per time step (minimum over
interleaved rounds; the machine is shared, compare ratios):

- ``all``: the conv backward autograd runs for ``conv(cat([x, h]))`` (input + weight + bias
  gradients in one oneDNN call) -- what the straightforward formulation pays per step;
- ``split``: what ``_ConvLSTMSequence.backward`` runs instead (weight + bias gradient with
  oneDNN, input gradients with :func:`echodfkd.student.model._dgrad`'s kernel choice;
  layer 0 needs no gradient for its 1-channel input);
- ``dh oneDNN`` / ``dh im2col``: the h-gradient alone with each kernel;
- max-pool 2x2 over the (B*T) frames of the layer's output: ``F.max_pool2d`` vs
  :func:`echodfkd.student.model.max_pool2x2` (no grad).

    python bench/convlstm_kernels.py [--threads 1] [--rounds 5]

The last line states the ratio all / split summed over the shapes.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from echodfkd.student.model import _JOINT_DGRAD_FROM, _dgrad, max_pool2x2

SHAPES = [(1, 6, 112), (6, 12, 56), (12, 24, 28),                     # default 3x1x6
          (1, 12, 112), (12, 12, 112), (12, 24, 56), (24, 24, 56),   # paper 3x3x12
          (24, 48, 28), (48, 48, 28)]
"""(in_ch, hidden, side) of each distinct ConvLSTM layer."""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cb = torch.ops.aten.convolution_backward
    slow = torch.ops.aten._slow_conv2d_backward.output_mask
    b, t = 2, 16
    tot_all = tot_split = 0.0
    print(f"ms per step, batch {b}, {a.threads} thread(s); max-pool over {b * t} frames")
    for cin, n, s in SHAPES:
        torch.manual_seed(0)
        w = torch.randn(4 * n, cin + n, 3, 3)
        wx, wh = w[:, :cin].contiguous(), w[:, cin:].contiguous()
        z = torch.randn(b, cin + n, s, s)
        dg = torch.randn(b, 4 * n, s, s)
        hs = torch.randn(b * t, n, s, s)
        joint = cin > 1 and cin + n >= _JOINT_DGRAD_FROM

        def split():
            if joint:
                cb(dg, z, w, [4 * n], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                   [True, True, True])
                return
            cb(dg, z, w, [4 * n], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, True])
            if cin > 1:
                _dgrad(dg, z[:, :cin], wx, 1)
            _dgrad(dg, z[:, cin:], wh, 1)

        variants = {
            "all": lambda: cb(dg, z, w, [4 * n], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                              [True, True, True]),
            "split": split,
            "dh oneDNN": lambda: cb(dg, z[:, cin:], wh, None, [1, 1], [1, 1], [1, 1], False,
                                    [0, 0], 1, [True, False, False]),
            "dh im2col": lambda: slow(dg, z[:, cin:], wh, [3, 3], [1, 1], [1, 1],
                                      [True, False, False]),
            "max_pool2d": lambda: F.max_pool2d(hs, 2),
            "max_pool2x2": lambda: max_pool2x2(hs),
        }
        times = {k: [] for k in variants}
        with torch.no_grad():
            for fn in variants.values():
                fn()
            for _ in range(a.rounds):
                for k, fn in variants.items():
                    t0 = time.perf_counter()
                    fn()
                    times[k].append(time.perf_counter() - t0)
        best = {k: min(v) * 1e3 for k, v in times.items()}
        tot_all += best["all"]
        tot_split += best["split"]
        print(f"  in {cin:2d} hidden {n:2d} {s:3d}px  " + "  ".join(
            f"{k}={v:6.2f}" for k, v in best.items())
            + f"  all/split={best['all'] / best['split']:.2f}"
            + f"  pool x{best['max_pool2d'] / best['max_pool2x2']:.1f}", flush=True)
    print(f"conv backward per step summed over the shapes: all / split = "
          f"{tot_all / tot_split:.2f}")


if __name__ == "__main__":
    main()
