"""PyTorch baselines (optional): an eager training loop, and torch.func.vmap over many models.

Imports only numpy and torch, so it runs in a separate venv (`--torch-python`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(sizes):
        lin = nn.Linear(d_in, d_out)
        nn.init.normal_(lin.weight, std=0.01)  # the seed's randn * 0.01
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def eager_fit(
    x_ND: np.ndarray, y_N: np.ndarray, *, sizes: Sequence[int], lr: float, epochs: int, batch: int
) -> nn.Sequential:
    """The usual PyTorch loop: one model, summed cross-entropy, SGD, batches in order."""
    model = _mlp(sizes)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.as_tensor(x_ND, dtype=torch.float32), torch.as_tensor(y_N, dtype=torch.long)
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            opt.zero_grad()
            logits = model(x[i : i + batch])
            loss = nn.functional.cross_entropy(logits, y[i : i + batch], reduction="sum")
            loss.backward()
            opt.step()
    return model


def vmap_fit(
    x_SND: np.ndarray, y_SN: np.ndarray, *, sizes: Sequence[int], lr: float, epochs: int, batch: int
) -> dict[str, torch.Tensor]:
    """S models trained at once: torch.func.grad of a functional call, vmapped over models."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    models = [_mlp(sizes) for _ in range(len(x_SND))]
    params, _ = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    base = models[0].to("meta")

    def loss_fn(p, x_BD, y_B):
        logits = functional_call(base, p, (x_BD,))
        return nn.functional.cross_entropy(logits, y_B, reduction="sum")

    grad_fn = vmap(grad(loss_fn))
    x, y = torch.as_tensor(x_SND, dtype=torch.float32), torch.as_tensor(y_SN, dtype=torch.long)
    with torch.no_grad():
        for _ in range(epochs):
            for i in range(0, x.shape[1], batch):
                g = grad_fn(params, x[:, i : i + batch], y[:, i : i + batch])
                params = {k: params[k] - lr * g[k] for k in params}
    return params
