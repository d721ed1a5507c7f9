"""Sanity check of the RT views: their dependence given the label, and Weight / Bias / fused
accuracies with the seed's models, over a vector of seeds.

    python experiments/rt_digits_check.py --source digits --seeds 16

Weight trains on x1 (log_gamma or log_eta), Bias on x2 (log_beta), "concat" on both (early
fusion); "fused" adds Weight's and Bias's log-softmaxes (late fusion, the product rule).
Training uses prtm_jax.config's defaults (the seed's PRTM2 hyper-parameters) unless --lr,
--optimizer or --epochs say otherwise. Dependence is measured on each seed's training rows.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from prtm_jax import dependence, images, mlp
from prtm_jax.config import Config
from prtm_jax.experiment import seed_keys
from prtm_jax.fusion import fuse
from prtm_jax.train import TrainSpec, make_train


def make_data(source: str, standardize: bool, weight_metric: str):
    if source == "digits":
        shape = images.DigitsShape(weight_metric=weight_metric, standardize=standardize)
        return lambda key: images.make_digits_two_view(key, images.DigitsParams(), shape)
    shape = images.PartsShape(weight_metric=weight_metric, standardize=standardize)
    return lambda key: images.make_parts_two_view(key, images.PartsParams(), shape)


def accuracies(keys, data, spec: TrainSpec, lr: float) -> dict[str, np.ndarray]:
    """Test accuracy (seeds,) of weight, bias, concat and fused, trained on every seed at once."""
    train = make_train(spec)

    def one(key, d):
        inputs = {
            "weight": (d.x1_train, d.x1_test),
            "bias": (d.x2_train, d.x2_test),
            "concat": (
                jnp.concatenate([d.x1_train, d.x2_train], -1),
                jnp.concatenate([d.x1_test, d.x2_test], -1),
            ),
        }
        logp = {}
        for i, (name, (x_train, x_test)) in enumerate(inputs.items()):
            fit = train(jax.random.fold_in(key, 1 + i), x_train, d.y_train, lr)
            logp[name] = jax.nn.log_softmax(mlp.apply(fit.params, x_test, spec.activation))
        logp["fused"] = fuse(logp["weight"], logp["bias"])
        return {k: (v.argmax(-1) == d.y_test).mean() for k, v in logp.items()}

    return jax.device_get(jax.jit(jax.vmap(one))(keys, data))


def main(argv: list[str] | None = None) -> None:
    cfg = Config()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["digits", "parts"], default="digits")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--weight-metric", choices=["log_gamma", "log_eta"], default="log_gamma")
    ap.add_argument("--lr", type=float, default=cfg.optim.lr)
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default=cfg.optim.name)
    ap.add_argument("--epochs", type=int, default=cfg.train.epochs)
    ap.add_argument("--permutations", type=int, default=999)
    ap.add_argument("--no-dependence", action="store_true")
    args = ap.parse_args(argv)

    spec = TrainSpec(
        sizes=(0, *cfg.model.hidden, 10),
        activation=cfg.model.activation,
        init=cfg.model.init,
        optimizer=args.optimizer,
        epochs=args.epochs,
        batch_size=cfg.train.batch_size,
        shuffle=cfg.train.shuffle,
        loss=cfg.train.loss,
    )
    keys = seed_keys(0, np.arange(args.seeds))
    print(f"{args.source}, {args.seeds} seeds, {args.weight_metric}, {args.optimizer} "
          f"lr={args.lr}, {args.epochs} epochs")  # fmt: skip
    for standardize in (False, True):
        t0 = time.time()
        maker = make_data(args.source, standardize, args.weight_metric)
        data = jax.jit(jax.vmap(lambda k, f=maker: f(jax.random.fold_in(k, 0))))(keys)
        acc = pd.DataFrame(accuracies(keys, data, spec, args.lr))
        print(f"\nstandardize={standardize} ({time.time() - t0:.0f} s); test accuracy:")
        print(acc.describe().loc[["mean", "std", "min", "max"]].round(3).to_string())
    if args.no_dependence:
        return
    # Rank-based measures: unchanged by the per-column affine standardisation.
    rows = []
    for s in range(args.seeds):
        a, b, y = (np.asarray(v[s]) for v in (data.x1_train, data.x2_train, data.y_train))
        dep = dependence.dependence(a, b, y, n_permutations=args.permutations, seed=s)
        rows.append(dependence.summarize(dep))
    dep = pd.DataFrame(rows)
    print(f"\ndependence of x1 ({args.weight_metric}) and x2 (log_beta) given the label, "
          f"training rows, {args.seeds} seeds:")  # fmt: skip
    print(dep.describe().loc[["mean", "std", "min", "max"]].T.round(4).to_string())


if __name__ == "__main__":
    main()
