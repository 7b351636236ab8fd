"""Virtual steps for meta-optimisation (layer-wise MCL's matching weights): SGD steps of a network's parameters
taken as a differentiable function, so a loss after them has a gradient in whatever the objectives of the steps
depended on (the hypergradient). The module's own parameters are never touched, so there is nothing to roll
back. The authors' MetaSGD (L-MCL's losses/meta_optimizers.py) instead steps in place, restores the saved state
dicts and runs the reverse pass by hand; its `meta_backward` adds the momentum adjoint a1 where the derivative
of the weight-decayed update gives wd * a1 (its own `meta_backward_all` has wd * a1), so with momentum and
weight decay both on its hypergradient drifts from the exact one this gives (tests/test_lmcl.py checks this one
against a hand-written reverse pass and finite differences)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Params = dict[str, Tensor]


def unrolled_sgd(params: Params, objectives: Sequence[Callable[[Params], Tensor]], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> Params:
    """One step of `torch.optim.SGD` (momentum buffer starting at zero, no dampening, not Nesterov) on each
    objective in turn, from `params`: d = g + weight_decay p, buf = momentum buf + d (buf = d the first time),
    p <- p - lr buf. Returns the parameters after the last step, with the graph of every step kept
    (create_graph), so they are differentiable functions of `params` and of what the objectives depend on.
    A parameter an objective does not use keeps its value through that step."""
    current, buffers = dict(params), {}
    for objective in objectives:
        names = [n for n, p in current.items() if p.requires_grad]
        grads = torch.autograd.grad(objective(current), [current[n] for n in names], create_graph=True,
                                    allow_unused=True)
        stepped = dict(current)
        for name, g in zip(names, grads):
            if g is None:
                continue
            d = g + weight_decay * current[name] if weight_decay else g
            buffers[name] = momentum * buffers[name] + d if name in buffers else d
            stepped[name] = current[name] - lr * buffers[name]
        current = stepped
    return current
