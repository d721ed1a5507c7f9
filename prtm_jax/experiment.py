"""Experiments: which models train on which view, which pairs fuse, over a vector of seeds.

`make_run(cfg)` does the Python-side work once and returns a pure `run(seed_key, hp)` for one
seed; `run_seeds(cfg)` is `jit(vmap(run))` over the seeds (in chunks of `seed_chunk`).
Seed i's keys are `fold_in(root, i)`, then `fold_in` by purpose (data, one per model), so a
seed's result never depends on how many seeds run or in which chunk.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from prtm_jax import mlp
from prtm_jax.config import Config
from prtm_jax.data import DataParams, DataShape, TwoView, make_two_view
from prtm_jax.fusion import fuse
from prtm_jax.train import TrainSpec, make_train

DATA_PURPOSE = 0


class ModelSpec(NamedTuple):
    name: str
    view: str  # "x1" (view 1), "x2" (view 2) or "concat" (both)


class FusionSpec(NamedTuple):
    name: str
    a: str
    b: str
    rule: str


class Task(NamedTuple):
    models: tuple[ModelSpec, ...]
    fusions: tuple[FusionSpec, ...]


TASKS: dict[str, Task] = {
    "prtm2": Task(
        models=(ModelSpec("weight", "x1"), ModelSpec("bias", "x2")),
        fusions=(FusionSpec("fused", "weight", "bias", "product"),),
    ),
    "prtm1": Task(models=(ModelSpec("mlp", "x1"),), fusions=()),
}


class HParams(NamedTuple):
    """Traced hyper-parameters: every leaf may be vmapped (a sweep grid) without recompiling."""

    data: DataParams
    lr: jax.Array | float


def hparams(cfg: Config) -> HParams:
    d = cfg.data
    data = DataParams(
        view1_std=d.view1_std,
        view2_mean=d.view2_mean,
        view2_std=d.view2_std,
        view2_offset=d.view2_offset,
        clip_floor=d.clip_floor,
        center_box=d.center_box,
    )
    return HParams(
        jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), data), jnp.float32(cfg.optim.lr)
    )


def model_names(task: Task) -> list[str]:
    return [m.name for m in task.models] + [f.name for f in task.fusions]


def _model_key(seed_key: jax.Array, name: str) -> jax.Array:
    # Keyed by the model's name, so adding a model to a task never changes another's keys.
    return jax.random.fold_in(seed_key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _view(data: TwoView, view: str, split: str) -> jax.Array:
    x1, x2 = getattr(data, f"x1_{split}"), getattr(data, f"x2_{split}")
    return {"x1": x1, "x2": x2, "concat": jnp.concatenate([x1, x2], axis=-1)}[view]


def make_run(cfg: Config) -> Callable[[jax.Array, HParams], dict[str, dict[str, jax.Array]]]:
    """Return `run(seed_key, hp) -> {model: {metric: scalar}}` for one seed."""
    task = TASKS[cfg.task]
    d = cfg.data
    shape = DataShape(d.n_train, d.n_test, d.n_classes, d.n_features)
    spec = TrainSpec(
        sizes=(0, *cfg.model.hidden, d.n_classes),  # input width comes from the data
        activation=cfg.model.activation,
        init=cfg.model.init,
        optimizer=cfg.optim.name,
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        shuffle=cfg.train.shuffle,
        loss=cfg.train.loss,
    )
    train = make_train(spec)

    def run(seed_key: jax.Array, hp: HParams) -> dict[str, dict[str, jax.Array]]:
        data = make_two_view(jax.random.fold_in(seed_key, DATA_PURPOSE), hp.data, shape)
        logp: dict[str, jax.Array] = {}
        out: dict[str, dict[str, jax.Array]] = {}
        for m in task.models:
            x_train, x_test = _view(data, m.view, "train"), _view(data, m.view, "test")
            fit = train(_model_key(seed_key, m.name), x_train, data.y_train, hp.lr)
            logp[m.name] = jax.nn.log_softmax(mlp.apply(fit.params, x_test, spec.activation))
            ok = jnp.isfinite(fit.loss_E).all() & jnp.isfinite(logp[m.name]).all()
            out[m.name] = {"train_loss": fit.loss_E[-1], "finite": ok}
        for f in task.fusions:
            logp[f.name] = fuse(logp[f.a], logp[f.b], f.rule)
            ok = out[f.a]["finite"] & out[f.b]["finite"] & jnp.isfinite(logp[f.name]).all()
            out[f.name] = {"train_loss": jnp.float32(jnp.nan), "finite": ok}
        for name, lp in logp.items():
            out[name].update(classification_metrics(lp, data.y_test))
        return out

    return run


def classification_metrics(logp_NC: jax.Array, y_N: jax.Array) -> dict[str, jax.Array]:
    """Accuracy and mean negative log-likelihood of log-probabilities against labels."""
    return {
        "accuracy": (logp_NC.argmax(-1) == y_N).mean(),
        "nll": -jnp.take_along_axis(logp_NC, y_N[:, None], axis=-1).mean(),
    }


def seed_keys(root_seed: int, seeds: np.ndarray) -> jax.Array:
    root = jax.random.key(root_seed)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(root, jnp.asarray(seeds, jnp.uint32))


def run_seeds(cfg: Config) -> dict[str, dict[str, np.ndarray]]:
    """Run every seed of `cfg`; returns {model: {metric: (seeds,) array}} on the host."""
    run = jax.jit(jax.vmap(make_run(cfg), in_axes=(0, None)))
    hp = hparams(cfg)
    ids = np.arange(cfg.seeds)
    chunk = cfg.seed_chunk or cfg.seeds
    parts = [
        jax.device_get(run(seed_keys(cfg.root_seed, ids[i : i + chunk]), hp))
        for i in range(0, cfg.seeds, chunk)
    ]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
