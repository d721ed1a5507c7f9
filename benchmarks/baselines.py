"""What prtm_jax's trainer is measured against, on the reference workload.

`numpy_sgd` is the seed's training loop (the PRTM2 note): float64, batches in order, the
cross-entropy gradient summed over the batch, backpropagation written out by hand. It is also
the float64 oracle of tests/test_train_perf.py. `sklearn_fit` is scikit-learn's MLPClassifier
with the same architecture and the same updates. PyTorch lives in `torch_baselines` (optional).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import numpy as np

Params = list[tuple[np.ndarray, np.ndarray]]


def seed_init(rng: np.random.Generator, sizes: Sequence[int]) -> Params:
    """The seed's init: weights `randn(d_in, d_out) * 0.01`, biases zero (float64)."""
    return [
        (rng.standard_normal((d_in, d_out)) * 0.01, np.zeros(d_out))
        for d_in, d_out in itertools.pairwise(sizes)
    ]


def numpy_sgd(
    params: Params,
    x_ND: np.ndarray,
    y_N: np.ndarray,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    loss: str = "sum",
) -> Params:
    """Plain SGD on a ReLU MLP with softmax cross-entropy, in float64; returns new params.

    Batches are taken in order and the last one may be short, as in the seed. `loss="sum"`
    is the seed's gradient (summed over the batch); "mean" divides it by the batch's rows.
    """
    ws = [np.array(w, np.float64) for w, _ in params]
    bs = [np.array(b, np.float64) for _, b in params]
    x_ND = np.asarray(x_ND, np.float64)
    target_NC = np.eye(ws[-1].shape[1])[np.asarray(y_N)]
    for _ in range(epochs):
        for i in range(0, len(x_ND), batch_size):
            acts = [x_ND[i : i + batch_size]]
            for w, b in zip(ws[:-1], bs[:-1], strict=True):
                acts.append(np.maximum(acts[-1] @ w + b, 0.0))
            logits_BC = acts[-1] @ ws[-1] + bs[-1]
            p_BC = np.exp(logits_BC - logits_BC.max(1, keepdims=True))
            p_BC /= p_BC.sum(1, keepdims=True)
            delta = p_BC - target_NC[i : i + batch_size]
            if loss == "mean":
                delta /= len(delta)
            for layer in reversed(range(len(ws))):
                grad_w, grad_b = acts[layer].T @ delta, delta.sum(0)
                if layer:  # back through the ReLU, with the weights before this update
                    delta = (delta @ ws[layer].T) * (acts[layer] > 0)
                ws[layer] -= lr * grad_w
                bs[layer] -= lr * grad_b
    return list(zip(ws, bs, strict=True))


def sklearn_fit(
    x_ND: np.ndarray,
    y_N: np.ndarray,
    *,
    hidden: Sequence[int],
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
):
    """MLPClassifier with the seed's architecture and budget: ReLU, plain SGD, batches in order.

    scikit-learn averages the gradient over the batch, so its learning rate is `lr *
    batch_size` to take the seed's steps; its init is Glorot-uniform (not `randn * 0.01`) and
    it never stops early here (`n_iter_no_change` is larger than the epoch budget).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=tuple(hidden),
        activation="relu",
        solver="sgd",
        alpha=0.0,
        batch_size=batch_size,
        learning_rate="constant",
        learning_rate_init=lr * batch_size,
        max_iter=epochs,
        shuffle=False,
        momentum=0.0,
        nesterovs_momentum=False,
        n_iter_no_change=epochs + 1,
        tol=0.0,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(x_ND, y_N)
