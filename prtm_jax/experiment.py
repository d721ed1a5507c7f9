"""Experiments: which models train on which view, which pairs fuse, over a vector of seeds.

`make_run(static_key(cfg))` does the Python-side work once and returns a pure
`run(seed_key, hp)` for one seed (data, training, test log-probs, fusion); `run_seeds(cfg)`
runs `jit(vmap(run))` over (grid point, seed) items in blocks of `seed_chunk` per device,
compiled once per `StaticKey` in a process, and `score`s each block's log-probs on the host.
Seed i's keys are `fold_in(root, i)`, then `fold_in` by purpose (data, one per model), so a
seed's result never depends on how many seeds run or in which chunk.
"""

from __future__ import annotations

import functools
import itertools
import warnings
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.std import TqdmExperimentalWarning

from prtm_jax import images, metrics, mlp, native
from prtm_jax.config import Config, ConfigError, grid_axes, n_classes, validate
from prtm_jax.data import DataParams, DataShape, TwoView, make_two_view
from prtm_jax.fusion import RULES, fit_pool_weights, fit_temperature, fuse, fused_name
from prtm_jax.train import TrainSpec, lanes_unsupported, make_train, resolve_impl

if TYPE_CHECKING:
    import pandas as pd

with warnings.catch_warnings():
    # tqdm.auto's bar (a widget in Jupyter, text elsewhere) without its asyncio mix-in, whose
    # import (asyncio's) is 40 ms of the `prtm` command's start.
    warnings.simplefilter("ignore", TqdmExperimentalWarning)
    from tqdm.autonotebook import tqdm

DATA_PURPOSE = 0


class ModelSpec(NamedTuple):
    name: str
    view: str  # "x1" (view 1), "x2" (view 2) or "concat" (both)
    film: bool = False  # the W&B network: view 1 modulated by view 2 (see mlp)


class FusionSpec(NamedTuple):
    name: str
    a: str
    b: str
    rule: str


class Task(NamedTuple):
    models: tuple[ModelSpec, ...]
    fusions: tuple[FusionSpec, ...]


WEIGHT, BIAS = ModelSpec("weight", "x1"), ModelSpec("bias", "x2")
PAIR = "weight|bias"  # the row of seeds.csv that describes the pair (diversity, dependence)
TEST = "test"  # make_run's test labels (and cmi_null's shuffles) for `score`; not a row
FITTED_RULES = frozenset({"calibrated_product", "pool"})  # fitted on the n_val held-out rows

TASKS: dict[str, Task] = {
    "prtm2": Task(
        models=(WEIGHT, BIAS),
        fusions=(FusionSpec("fused", "weight", "bias", "product"),),
    ),
    "prtm1": Task(models=(ModelSpec("mlp", "x1"),), fusions=()),
    # The open questions: every fusion rule, early fusion (concat) and the W&B model, all on
    # the same seeds and data as Weight and Bias.
    "study": Task(
        models=(WEIGHT, BIAS, ModelSpec("concat", "concat"), ModelSpec("wb", "concat", True)),
        fusions=tuple(FusionSpec(fused_name(r), "weight", "bias", r) for r in RULES),
    ),
}


def validate_config(cfg: Config) -> Config:
    """`config.validate` plus what depends on the task: fitted rules need held-out rows."""
    validate(cfg, tuple(TASKS))
    fitted = sorted({f.rule for f in TASKS[cfg.task].fusions} & FITTED_RULES)
    if fitted and cfg.data.n_val < 1:
        raise ConfigError(
            f"data.n_val must be >= 1 for task={cfg.task} (rules {', '.join(fitted)} are "
            f"fitted on held-out rows), got {cfg.data.n_val}"
        )
    if cfg.train.impl == "lanes":
        train_impls(cfg)
    return cfg


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


def pair_of(task: Task) -> tuple[str, str]:
    """The two models the PAIR row describes: the inputs of the task's first fusion."""
    return task.fusions[0].a, task.fusions[0].b


def model_names(task: Task) -> list[str]:
    """Rows of seeds.csv, in order: models, fused models, then the pair row if any."""
    pair = [PAIR] if task.fusions else []
    return [m.name for m in task.models] + [f.name for f in task.fusions] + pair


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
        impl=cfg.train.impl,
    )


def train_impls(cfg: Config) -> dict[str, str]:
    """{model: "xla" or "lanes"}: what trains each model of cfg's task (train.resolve_impl).

    Raises ConfigError if train.impl=lanes and the kernel cannot train one of them."""
    spec, impls = train_spec(cfg), {}
    for m in TASKS[cfg.task].models:
        # The W&B model's split is only known with the data; any nonzero value resolves alike.
        m_spec = spec._replace(film_split=int(m.film))
        if spec.impl == "lanes" and (reason := lanes_unsupported(m_spec)):
            raise ConfigError(
                f"train.impl=lanes cannot train model {m.name}: {reason} (use auto or xla)"
            )
        impls[m.name] = resolve_impl(m_spec)
    return impls


def make_run(
    key: StaticKey,
) -> Callable[[jax.Array, HParams], dict[str, dict[str, jax.Array]]]:
    """Return `run(seed_key, hp) -> {model: {output: array}}` for one seed: training loss,
    finiteness, fitted fusion parameters and test log-probs per model, and the `TEST` entry
    (labels, cmi_null's shuffles) that `score` turns into metrics."""
    task, spec, make_data = TASKS[key.task], key.spec, SOURCES[key.source]
    train = make_train(spec)

    def run(seed_key: jax.Array, hp: HParams) -> dict[str, dict[str, jax.Array]]:
        data = make_data(jax.random.fold_in(seed_key, DATA_PURPOSE), hp.data, key.shape)
        data, val = split_validation(data, key.n_val)
        n_class = spec.sizes[-1]
        logits, logits_val, out = {}, {}, {}
        for m in task.models:
            fit_fn = (
                make_train(spec._replace(film_split=data.x1_train.shape[-1])) if m.film else train
            )
            fit = fit_fn(
                _model_key(seed_key, m.name), _view(data, m.view, "train"), data.y_train, hp.lr
            )
            logits[m.name] = mlp.apply(fit.params, _view(data, m.view, "test"), spec.activation)
            if val is not None:
                x_val = _view(val, m.view, "train")
                logits_val[m.name] = mlp.apply(fit.params, x_val, spec.activation)
            ok = jnp.isfinite(fit.loss_E).all() & jnp.isfinite(logits[m.name]).all()
            out[m.name] = {"train_loss": fit.loss_E[-1], "finite": ok}
        logp = {name: jax.nn.log_softmax(z) for name, z in logits.items()}
        for f in task.fusions:
            params = _fusion_params(f, logits_val, val, data.y_train, n_class)
            logp[f.name] = fuse(logits[f.a], logits[f.b], f.rule, **params)
            ok = out[f.a]["finite"] & out[f.b]["finite"] & jnp.isfinite(logp[f.name]).all()
            out[f.name] = {
                "finite": ok,
                **{k: jnp.asarray(v) for k, v in params.items() if k != "log_prior"},
            }
        # The metrics are computed on the host from these (`score`).
        for name, lp in logp.items():
            out[name]["logp"] = lp
        out[TEST] = {"y": data.y_test}
        if task.fusions:
            a, b = pair_of(task)
            out[PAIR] = {"finite": out[a]["finite"] & out[b]["finite"]}
            pred_b = logp[b].argmax(-1)
            k_null = _model_key(seed_key, "metrics")
            out[TEST]["null_b"] = metrics.null_shuffles(k_null, pred_b, data.y_test, n_class)
        return out

    return run


def score(task: Task, out: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """`make_run`'s outputs for a block of items, on the host, with the test log-probs replaced
    by their metrics (metrics.py, in float64, stored as float32 like the program's outputs):
    {model: {metric: (items,) array, or (items, bins) for the reliability bins}}."""
    out = {name: dict(d) for name, d in out.items()}
    test = out.pop(TEST)
    logp = {name: d.pop("logp") for name, d in out.items() if "logp" in d}
    if task.fusions:
        per_model, pair = metrics.all_metrics(
            logp,
            test["y"],
            pair=pair_of(task),
            fused=[f.name for f in task.fusions],
            shuffled_b_SN=test["null_b"],
        )
        out[PAIR].update(pair)
    else:
        per_model = {m: metrics.model_metrics(lp, test["y"]) for m, lp in logp.items()}
    for name in logp:
        out[name].update(per_model[name])
    return jax.tree.map(lambda v: v.astype(np.float32) if v.dtype == np.float64 else v, out)


def _fusion_params(
    f: FusionSpec,
    logits_val: dict[str, jax.Array],
    val: TwoView | None,
    y_train: jax.Array,
    n_class: int,
) -> dict[str, jax.Array]:
    """A rule's fitted inputs: the training prior, or temperatures / pool weights fitted on
    the held-out rows (never on test rows)."""
    if f.rule == "prior_product":
        counts = jnp.bincount(y_train, length=n_class)
        return {"log_prior": jnp.log(counts / counts.sum())}
    if f.rule == "calibrated_product":
        t_a = fit_temperature(logits_val[f.a], val.y_train)
        return {"t_a": t_a, "t_b": fit_temperature(logits_val[f.b], val.y_train)}
    if f.rule == "pool":
        w_a, w_b = fit_pool_weights(logits_val[f.a], logits_val[f.b], val.y_train)
        return {"w_a": w_a, "w_b": w_b}
    return {}


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


def seed_keys(root_seed: int, seeds: np.ndarray) -> jax.Array:
    root = jax.random.key(root_seed)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(root, jnp.asarray(seeds, jnp.uint32))


@functools.partial(jax.jit, static_argnums=0)  # root seeds may exceed int32
def _seed_key_data(root_seed: int, seeds: jax.Array) -> jax.Array:
    return jax.random.key_data(seed_keys(root_seed, seeds))


def seed_key_data(root_seed: int, seeds: np.ndarray) -> np.ndarray:
    """`key_data(seed_keys(root_seed, seeds))` on the host, from one compiled program: run
    eagerly, seed_keys compiles four small ones."""
    return np.asarray(_seed_key_data(root_seed, np.asarray(seeds, np.uint32)))


def grid_points(cfg: Config) -> list[dict[str, float]]:
    """The in-process grid: one dict {axis: value} per point (one empty dict if no grid)."""
    axes = grid_axes(cfg)
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def grid_hparams(cfg: Config, points: list[dict[str, float]]) -> HParams:
    """HParams with a leading (points,) axis on every leaf, as float32 NumPy arrays (cutting
    them into blocks on the host compiles nothing)."""

    def at(point: dict[str, float]) -> HParams:
        hp = hparams(cfg)
        lr = point.get("lr", hp.lr)
        data = hp.data._replace(**{k: v for k, v in point.items() if k != "lr"})
        return HParams(data, lr)

    return jax.tree.map(lambda *v: np.asarray(v, np.float32), *[at(p) for p in points])


class StaticKey(NamedTuple):
    """Everything that shapes the compiled program; the jitted runner is cached on it."""

    task: str
    source: str
    shape: NamedTuple
    n_val: int
    spec: TrainSpec


def static_key(cfg: Config) -> StaticKey:
    return StaticKey(cfg.task, cfg.data.source, source_shape(cfg), cfg.data.n_val, train_spec(cfg))


# XLA:CPU's backend optimisation level 1 instead of the default: the hot operations are library
# matmul calls, not generated code, so the program runs as fast and compiles 3-4x faster. The
# training trajectories are the same (every accuracy equal); reductions such as NLL and ECE may
# differ by a few ulps, and the pool weights fitted from them by more (up to 3e-4 relative in
# the test) (docs/performance.md, optimisation 8; tests/test_experiment.py).
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def per_device(fn: Callable[..., Any], n_devices: int, **jit_kwargs: Any) -> Callable[..., Any]:
    """jit(fn) for blocks sharded by `seed_sharding(n_devices)`: each device runs fn on its own
    items (fn maps over a leading item axis). shard_map, not jit's automatic partitioning: the
    partitioner cannot split the lanes kernel's custom call and would run it whole on every
    device. Nothing in fn communicates across devices, so replication is not tracked
    (check_vma=False: the trainer's scan carries start from constants)."""
    if n_devices > 1:
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:n_devices]), ("seeds",))
        spec = jax.sharding.PartitionSpec("seeds")
        fn = jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
    return jax.jit(fn, **jit_kwargs)


@functools.cache
def compiled_runner(key: StaticKey, n_devices: int) -> Callable[[jax.Array, HParams], dict]:
    """vmap(run) over a block of (seed key data, hyper-parameters) items, sharded over
    n_devices, jitted; one per (StaticKey, n_devices). The items are host arrays (uint32 key
    data from `seed_key_data`, `grid_hparams`), so that cutting them into blocks compiles
    nothing."""
    options = None
    if jax.default_backend() == "cpu":
        options = CPU_COMPILER_OPTIONS
        native.use_native_threefry()  # the same random numbers, less to compile
    run_seed = make_run(key)

    def run(key_data: jax.Array, hp: HParams) -> dict[str, dict[str, jax.Array]]:
        return run_seed(jax.random.wrap_key_data(key_data), hp)

    return per_device(jax.vmap(run), n_devices, compiler_options=options)


# Compiled runners by (StaticKey, devices, block shapes): each compiles once per process.
_EXECUTABLES: dict[tuple, jax.stages.Compiled] = {}


def block_runner(
    key: StaticKey,
    n_devices: int,
    block: tuple,
    while_compiling: Callable[[], object] | None = None,
) -> jax.stages.Compiled:
    """`compiled_runner(key, n_devices)` compiled for blocks shaped like `block`, once per
    process. Only the shapes, dtypes and shardings of `block` matter. Tracing and lowering
    run on this thread; XLA's compile, which releases the GIL, runs on a worker while
    `while_compiling()` (host work the caller needs next, such as imports) runs here; with
    nothing to compile, it runs right away. No traced code runs on the worker."""
    shapes = tuple((v.shape, str(v.dtype)) for v in jax.tree.leaves(block))
    cache_key = (key, n_devices, shapes)
    hook = while_compiling or (lambda: None)
    if cache_key in _EXECUTABLES:
        hook()
    else:
        lowered = compiled_runner(key, n_devices).lower(*block)
        with ThreadPoolExecutor(1) as worker:
            job = worker.submit(lowered.compile)
            hook()
            _EXECUTABLES[cache_key] = job.result()
    return _EXECUTABLES[cache_key]


def clear_compiled() -> None:
    """Forget every compiled runner (the next run_seeds traces and compiles again)."""
    compiled_runner.cache_clear()
    _EXECUTABLES.clear()


def block_devices(n_items: int, chunk: int) -> int:
    """Devices a run of n_items uses: all local ones, but no more than there are blocks of
    `chunk` to fill (1 seed on a 64-core machine runs one block, not 64)."""
    return min(jax.device_count(), -(-n_items // chunk))


def seed_sharding(n_devices: int) -> jax.sharding.NamedSharding | None:
    """Items split over the first n_devices local devices (None: one device, no sharding)."""
    if n_devices == 1:
        return None
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:n_devices]), ("seeds",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("seeds"))


def iter_blocks(items: tuple, chunk: int) -> Iterator[tuple]:
    """The blocks run_in_blocks feeds fn, in order: `items` (a tuple of pytrees with a leading
    item axis) cut into blocks of exactly `chunk` items per device, the last one padded with
    repeats of the last item, each sharded over `block_devices` local devices."""
    n_items = jax.tree.leaves(items)[0].shape[0]
    n_dev = block_devices(n_items, chunk)
    block = chunk * n_dev
    take_all = np.r_[np.arange(n_items), np.full(-n_items % block, n_items - 1)]
    sharding = seed_sharding(n_dev)
    for start in range(0, take_all.size, block):
        args = jax.tree.map(lambda v, s=start: v[take_all[s : s + block]], items)
        yield args if sharding is None else jax.device_put(args, sharding)


def run_in_blocks(
    fn: Callable[..., Any],
    items: tuple,
    chunk: int,
    *,
    progress: bool = False,
    on_host: Callable[[Any], Any] = lambda block: block,
) -> Any:
    """fn (vmapped, jitted) over every item, in the blocks of `iter_blocks`.

    fn takes one block of each of `items` and returns a pytree with a leading item axis. The
    next block is dispatched before the current one is fetched; each fetched block goes
    through `on_host` (on the host, while the devices run the next one), and the results come
    back without the padding.
    """
    n_items = jax.tree.leaves(items)[0].shape[0]
    n_blocks = -(-n_items // (chunk * block_devices(n_items, chunk)))
    quiet = not progress or n_blocks < 2
    bar = tqdm(total=n_blocks, desc="seed blocks", unit="block", disable=quiet)
    blocks = iter_blocks(items, chunk)
    # At most two blocks' outputs are alive at once; the devices never wait for the host.
    parts, pending = [], fn(*next(blocks))  # dispatched asynchronously
    for args in blocks:
        following = fn(*args)
        parts.append(on_host(jax.device_get(pending)))
        bar.update()
        pending = following
    parts.append(on_host(jax.device_get(pending)))
    bar.update()
    bar.close()
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:n_items], *parts)


def run_seeds(
    cfg: Config, while_compiling: Callable[[], object] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """Run every seed at every grid point; {model: {metric: (points, seeds) array}} on the host.

    Every (grid point, seed) pair is one work item; items run in blocks of exactly
    `seed_chunk` per device (the last block padded with repeats), sharded over local devices
    along the items. XLA's float32 kernels depend on the batch shape, and SGD amplifies their
    rounding differences over thousands of steps; with one block shape, an item's result is a
    function of its seed, its point and `seed_chunk` only: not of the seed count, the grid, the
    device count or the item's position (tests check each). `while_compiling` runs on this
    thread while XLA compiles, if it does (`block_runner`).
    """
    validate_config(cfg)
    points = grid_points(cfg)
    hp = grid_hparams(cfg, points)
    point_I = np.repeat(np.arange(len(points)), cfg.seeds)
    seed_I = np.tile(np.arange(cfg.seeds), len(points))
    hp_I = jax.tree.map(lambda v: v[point_I], hp)
    n_devices = block_devices(len(point_I), cfg.seed_chunk)
    # The program is lowered from the keys' shape; their values (a small program of their
    # own) are computed while XLA compiles it.
    keys_like = jax.eval_shape(functools.partial(_seed_key_data, cfg.root_seed), seed_I)
    first = next(iter_blocks((np.zeros(keys_like.shape, keys_like.dtype), hp_I), cfg.seed_chunk))
    keys: list[np.ndarray] = []

    def meanwhile() -> None:
        keys.append(seed_key_data(cfg.root_seed, seed_I))
        if while_compiling is not None:
            while_compiling()

    run = block_runner(static_key(cfg), n_devices, first, meanwhile)
    merged = run_in_blocks(
        run,
        (keys[0], hp_I),
        cfg.seed_chunk,
        progress=cfg.progress,
        on_host=functools.partial(score, TASKS[cfg.task]),
    )
    shaped = jax.tree.map(lambda a: a.reshape(len(points), cfg.seeds, *a.shape[1:]), merged)
    return {name: shaped[name] for name in model_names(TASKS[cfg.task])}


def view_dependence(cfg: Config, n_seeds: int, n_permutations: int = 199) -> pd.DataFrame:
    """Dependence between the two views' training rows given the label, for the first n_seeds
    seeds at every grid point (within-class Spearman, CMI, stratified permutation test)."""
    import pandas as pd

    from prtm_jax import dependence

    key = static_key(cfg)
    make = jax.jit(
        jax.vmap(
            lambda k, p: SOURCES[key.source](jax.random.fold_in(k, DATA_PURPOSE), p, key.shape),
            in_axes=(0, None),
        )
    )
    points = grid_points(cfg)
    hp = grid_hparams(cfg, points)
    keys = seed_keys(cfg.root_seed, np.arange(n_seeds))
    rows = []
    for g, point in enumerate(points):
        data = jax.device_get(make(keys, jax.tree.map(lambda v, g=g: v[g], hp.data)))
        for i in range(n_seeds):
            dep = dependence.dependence(
                data.x1_train[i], data.x2_train[i], data.y_train[i], n_permutations, seed=i
            )
            rows.append({"seed": i, **point, **dependence.summarize(dep)})
    return pd.DataFrame(rows)
