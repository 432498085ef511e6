"""How each solve's start (skip, warm, cold) trades work for accuracy in layer-parallel
training: the numbers behind the defaults (issue 26).

``conv_resnet`` (N = 32, 4 channels, digits at 16x16, 3 levels, cfactor 4, F fine / FCF
coarse), its weights after 10 batches of exact SGD (batch 50, lr 0.05). For each start:
  - forward: the output's relative error against exact forward on batch 11, and the
    forward steps per level, for 1-3 iterations (a warm start has solved batch 10 first);
  - training: the parameter gradient's relative error against exact backprop on batch 11
    and the steps per level (the adjoint's zero steps left out), for forward / adjoint
    starts at 2 / 1 iterations.
Errors only, no times: ``bench_layer_parallel.py`` times the settings side by side.

    python benchmarks/layer_parallel_starts.py --json benchmarks/results/layer_parallel_starts.json
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import torch
import torch.nn.functional as F

from common import write_json  # this directory is on sys.path
from torchpint.data import digits_datasets
from torchpint.layerparallel import LayerParallel, conv_resnet, gradient_check

N, CHANNELS, BATCH = 32, 4, 50
PAIRS = [("warm", "cold"), ("cold", "cold"), ("skip", "cold"), ("warm", "skip"),
         ("skip", "skip")]


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = digits_datasets(16, 1)[0].tensors
    return [(x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]) for i in range(12)]


def _trained(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The weights after 10 batches of exact SGD, from seed 0."""
    torch.manual_seed(0)
    net = conv_resnet(N, CHANNELS, 1, 10, 16, levels=1)
    serial = net.serial()
    opt = torch.optim.SGD(serial.parameters(), lr=0.05)
    for x, y in batches[:10]:
        opt.zero_grad()
        F.cross_entropy(serial(x), y).backward()
        opt.step()
    return net.state_dict()


def _net(state: dict[str, torch.Tensor], **kw: Any) -> LayerParallel:
    net = conv_resnet(N, CHANNELS, 1, 10, 16, levels=3, cfactor=4, **kw)
    net.load_state_dict({k: v for k, v in state.items() if k != "_extra_state"}, strict=False)
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    batches = _batches()
    state = _trained(batches)
    (x0, _), (x, y) = batches[10], batches[11]
    exact = _net(state).serial()
    with torch.no_grad():
        ref = exact(x)
    forward = []
    print(f"forward: output error on a trained net (N={N}, C={CHANNELS})")
    for start, k in itertools.product(("warm", "cold", "skip"), (1, 2, 3)):
        net = _net(state, fwd_start=start, fwd_iterations=k)
        with torch.no_grad():
            net(x0)  # the previous batch: a warm start's solution
            out = net(x)
        err = float((out - ref).norm() / ref.norm())
        counts = net.step_counts["forward"]
        forward.append({"start": start, "iterations": k, "output_rel_err": err,
                        "steps": counts, "total": sum(counts)})
        print(f"  {start:>4} x{k}: error {err:.2e}, steps {counts} ({sum(counts)})")
    training = []
    print("training step (2 forward / 1 adjoint iterations): gradient error")
    for fwd, bwd in PAIRS:
        net = _net(state, fwd_start=fwd, bwd_start=bwd)
        with torch.no_grad():
            net(x0)
        check = gradient_check(net, x, y)
        assert check is not None
        net(x).sum().backward()
        counts = net.step_counts
        training.append({"fwd_start": fwd, "bwd_start": bwd, **check, "steps": counts})
        print(f"  {fwd:>4} / {bwd:<4}: gradient error {check['grad_rel_err']:.2e}, forward "
              f"{counts['forward']}, adjoint {counts['adjoint']}")
    write_json(args.json, {"setting": {"steps": N, "channels": CHANNELS, "batch": BATCH,
                                       "levels": 3, "cfactor": 4},
                           "forward": forward, "training": training}, indent=1)


if __name__ == "__main__":
    main()
