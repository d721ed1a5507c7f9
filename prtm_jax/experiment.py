"""Experiments: which models train on which view, which pairs fuse, over a vector of seeds.

`make_run(static_key(cfg))` does the Python-side work once and returns a pure
`run(seed_key, hp)` for one seed; `run_seeds(cfg)` runs `jit(vmap(vmap(run)))` over grid points
and seeds (in chunks of `seed_chunk`), compiled once per `StaticKey` in a process.
Seed i's keys are `fold_in(root, i)`, then `fold_in` by purpose (data, one per model), so a
seed's result never depends on how many seeds run or in which chunk.
"""

from __future__ import annotations

import functools
import itertools
import zlib
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from prtm_jax import images, mlp
from prtm_jax.config import Config, grid_axes, n_classes
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


# Each source is a pure `make(key, params, shape) -> TwoView`: traced params, static shape.
SOURCES: dict[str, Callable[[jax.Array, NamedTuple, NamedTuple], TwoView]] = {
    "blobs": make_two_view,
    "digits": images.make_digits_two_view,
    "parts": images.make_parts_two_view,
}


def source_shape(cfg: Config) -> NamedTuple:
    """Static sizes of the configured source; n_val extra training rows are drawn for blobs
    and parts (held out from training), and taken out of digits' fixed training split."""
    d = cfg.data
    if d.source == "blobs":
        return DataShape(d.n_train + d.n_val, d.n_test, d.n_classes, d.n_features)
    if d.source == "digits":
        return images.DigitsShape(d.n_test_per_class, d.weight_metric, d.standardize)
    return images.PartsShape(
        d.n_train + d.n_val, d.n_test, d.n_types, d.image_size, d.weight_metric, d.standardize
    )


def source_params(cfg: Config) -> NamedTuple:
    """Traced parameters of the configured source, as float32 scalars."""
    d = cfg.data
    if d.source == "blobs":
        p = DataParams(
            view1_std=d.view1_std,
            view2_mean=d.view2_mean,
            view2_std=d.view2_std,
            view2_offset=d.view2_offset,
            clip_floor=d.clip_floor,
            center_box=d.center_box,
            rho=d.rho,
        )
    elif d.source == "digits":
        p = images.DigitsParams(noise_std=d.pixel_noise)
    else:
        p = images.PartsParams(noise_std=d.pixel_noise, defect_depth=d.defect_depth)
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), p)


def hparams(cfg: Config) -> HParams:
    return HParams(source_params(cfg), jnp.float32(cfg.optim.lr))


def model_names(task: Task) -> list[str]:
    return [m.name for m in task.models] + [f.name for f in task.fusions]


def _model_key(seed_key: jax.Array, name: str) -> jax.Array:
    # Keyed by the model's name, so adding a model to a task never changes another's keys.
    return jax.random.fold_in(seed_key, zlib.crc32(name.encode()) & 0x7FFFFFFF)


def _view(data: TwoView, view: str, split: str) -> jax.Array:
    x1, x2 = getattr(data, f"x1_{split}"), getattr(data, f"x2_{split}")
    return {"x1": x1, "x2": x2, "concat": jnp.concatenate([x1, x2], axis=-1)}[view]


def train_spec(cfg: Config) -> TrainSpec:
    return TrainSpec(
        sizes=(0, *cfg.model.hidden, n_classes(cfg)),  # input width comes from the data
        activation=cfg.model.activation,
        init=cfg.model.init,
        optimizer=cfg.optim.name,
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        shuffle=cfg.train.shuffle,
        loss=cfg.train.loss,
    )


def make_run(
    key: StaticKey,
) -> Callable[[jax.Array, HParams], dict[str, dict[str, jax.Array]]]:
    """Return `run(seed_key, hp) -> {model: {metric: scalar}}` for one seed."""
    task, spec, make_data = TASKS[key.task], key.spec, SOURCES[key.source]
    train = make_train(spec)

    def run(seed_key: jax.Array, hp: HParams) -> dict[str, dict[str, jax.Array]]:
        data = make_data(jax.random.fold_in(seed_key, DATA_PURPOSE), hp.data, key.shape)
        data, _val = split_validation(data, key.n_val)
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


def split_validation(data: TwoView, n_val: int) -> tuple[TwoView, TwoView | None]:
    """Hold the last n_val training rows out of training (for fitting fusion rules)."""
    if not n_val:
        return data, None
    fit = data._replace(
        x1_train=data.x1_train[:-n_val],
        x2_train=data.x2_train[:-n_val],
        y_train=data.y_train[:-n_val],
    )
    val = data._replace(
        x1_train=data.x1_train[-n_val:],
        x2_train=data.x2_train[-n_val:],
        y_train=data.y_train[-n_val:],
    )
    return fit, val


def classification_metrics(logp_NC: jax.Array, y_N: jax.Array) -> dict[str, jax.Array]:
    """Accuracy and mean negative log-likelihood of log-probabilities against labels."""
    return {
        "accuracy": (logp_NC.argmax(-1) == y_N).mean(),
        "nll": -jnp.take_along_axis(logp_NC, y_N[:, None], axis=-1).mean(),
    }


def seed_keys(root_seed: int, seeds: np.ndarray) -> jax.Array:
    root = jax.random.key(root_seed)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(root, jnp.asarray(seeds, jnp.uint32))


def grid_points(cfg: Config) -> list[dict[str, float]]:
    """The in-process grid: one dict {axis: value} per point (one empty dict if no grid)."""
    axes = grid_axes(cfg)
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def grid_hparams(cfg: Config, points: list[dict[str, float]]) -> HParams:
    """HParams with a leading (points,) axis on every leaf."""

    def at(point: dict[str, float]) -> HParams:
        hp = hparams(cfg)
        lr = point.get("lr", hp.lr)
        data = hp.data._replace(**{k: v for k, v in point.items() if k != "lr"})
        return HParams(data, lr)

    return jax.tree.map(lambda *v: jnp.asarray(v, jnp.float32), *[at(p) for p in points])


class StaticKey(NamedTuple):
    """Everything that shapes the compiled program; the jitted runner is cached on it."""

    task: str
    source: str
    shape: NamedTuple
    n_val: int
    spec: TrainSpec


def static_key(cfg: Config) -> StaticKey:
    return StaticKey(cfg.task, cfg.data.source, source_shape(cfg), cfg.data.n_val, train_spec(cfg))


@functools.cache
def compiled_runner(key: StaticKey) -> Callable[[jax.Array, HParams], dict]:
    """jit(vmap over grid points (vmap over seeds)), one per StaticKey for the process."""
    run = make_run(key)
    return jax.jit(jax.vmap(jax.vmap(run, in_axes=(0, None)), in_axes=(None, 0)))


def _seed_sharding(n_devices: int) -> jax.sharding.NamedSharding | None:
    if n_devices == 1:
        return None
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))


def run_seeds(cfg: Config) -> dict[str, dict[str, np.ndarray]]:
    """Run every seed at every grid point; {model: {metric: (points, seeds) array}} on the host.

    Seeds run in chunks of `seed_chunk` (all at once if 0), each chunk padded to the same size
    so one compiled program serves them all, and split across local devices along the seeds.
    """
    points = grid_points(cfg)
    hp = grid_hparams(cfg, points)
    run = compiled_runner(static_key(cfg))
    n_dev = jax.device_count()
    chunk = min(cfg.seed_chunk or cfg.seeds, cfg.seeds)
    chunk = -(-chunk // n_dev) * n_dev
    sharding = _seed_sharding(n_dev)
    parts = []
    starts = range(0, cfg.seeds, chunk)
    bar = tqdm(
        starts, desc="seed chunks", unit="chunk", disable=not cfg.progress or len(starts) < 2
    )
    for start in bar:
        ids = np.arange(start, start + chunk)
        keys = seed_keys(cfg.root_seed, ids)
        if sharding is not None:
            keys = jax.device_put(keys, sharding)
        out = jax.device_get(run(keys, hp))
        n_real = min(chunk, cfg.seeds - start)
        parts.append(jax.tree.map(lambda a, n=n_real: a[:, :n], out))
    merged = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *parts)
    return {name: merged[name] for name in model_names(TASKS[cfg.task])}
