"""Typed configuration: the schema behind conf/*.yaml and the checks run before any compilation.

Static fields (sizes, widths, activation, epochs, batch size) change the compiled program;
traced fields (noise levels, learning rate) are array leaves of `HParams` and can be vmapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prtm_jax.mlp import ACTIVATIONS, INITS
from prtm_jax.train import IMPLS

OPTIMIZERS = ("sgd", "adam")
LOSS_REDUCTIONS = ("sum", "mean")
DATA_SOURCES = ("blobs", "digits", "parts")
WEIGHT_METRICS = ("log_gamma", "log_eta")
# "highest" keeps float32 matmuls exact on GPU/TPU (no silent TF32 / bfloat16 passes).
MATMUL_PRECISIONS = ("highest", "high", "default")


class ConfigError(ValueError):
    """A user-facing configuration error; its message is one line naming the field."""


@dataclass
class DataConfig:
    source: str = "blobs"
    n_train: int = 2000
    n_test: int = 500
    n_val: int = 0
    n_classes: int = 10
    n_features: int = 10
    view1_std: float = 4.5
    view2_mean: float = 0.5
    view2_std: float = 0.25
    view2_offset: float = 0.55
    clip_floor: float = 0.001
    center_box: float = 10.0
    rho: float = 0.0
    # RT-feature sources (digits, parts): the Weight view's metric, z-scoring with training
    # statistics, pixel noise; digits' stratified test size; parts' types and image size.
    weight_metric: str = "log_gamma"
    standardize: bool = True
    pixel_noise: float = 0.0
    n_test_per_class: int = 36
    n_types: int = 5
    image_size: int = 12
    defect_depth: float = 0.8


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    activation: str = "relu"
    init: str = "seed"


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.005


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 32
    shuffle: bool = False
    loss: str = "sum"
    impl: str = "auto"


@dataclass
class GridConfig:
    """Numeric axes run inside one job as a vmapped axis beside the seeds (None: not gridded).

    The grid is the Cartesian product of the listed axes, in this field order; each point's
    value replaces the matching scalar (`data.view1_std`, ..., `optim.lr`).
    """

    view1_std: list[float] | None = None
    view2_std: list[float] | None = None
    view2_offset: list[float] | None = None
    rho: list[float] | None = None
    lr: list[float] | None = None


@dataclass
class Config:
    task: str = "prtm2"
    seeds: int = 64
    root_seed: int = 0
    seed_chunk: int = 16
    cpu_devices: int = 0  # JAX CPU devices; 0 = one per core (no effect on GPU/TPU runs)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    matmul_precision: str = "highest"
    dependence_seeds: int = 0
    progress: bool = True


def _require(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


def _choice(name: str, value: str, allowed: tuple[str, ...] | list[str]) -> None:
    _require(value in allowed, f"{name}={value!r} is not one of: {', '.join(allowed)}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _positive(name: str, value: float, *, integer: bool = False) -> None:
    kind = "a positive integer" if integer else "a positive finite number"
    ok = _number(value) and (isinstance(value, int) or not integer)
    ok = ok and 0 < value < math.inf
    _require(ok, f"{name} must be {kind}, got {value!r}")


def _finite(name: str, value: float) -> None:
    _require(
        _number(value) and math.isfinite(value), f"{name} must be a finite number, got {value!r}"
    )


# JAX's default keys keep 32 bits of a seed: 2**32 would give root_seed 0's key again.
ROOT_SEEDS = 2**32


def validate(cfg: Config, tasks: tuple[str, ...] | list[str]) -> Config:
    """Check every user-settable value; raise ConfigError with a one-line message."""
    _choice("task", cfg.task, tasks)
    _positive("seeds", cfg.seeds, integer=True)
    _positive("seed_chunk", cfg.seed_chunk, integer=True)
    _require(
        isinstance(cfg.root_seed, int) and 0 <= cfg.root_seed < ROOT_SEEDS,
        f"root_seed must be an integer in 0..{ROOT_SEEDS - 1}, got {cfg.root_seed!r}",
    )
    _require(
        isinstance(cfg.cpu_devices, int) and cfg.cpu_devices >= 0,
        f"cpu_devices must be an integer >= 0 (0: one per core), got {cfg.cpu_devices!r}",
    )
    d = cfg.data
    _choice("data.source", d.source, DATA_SOURCES)
    for name in ("n_train", "n_test", "n_features"):
        _positive(f"data.{name}", getattr(d, name), integer=True)
    _require(d.n_classes >= 2, f"data.n_classes must be an integer >= 2, got {d.n_classes}")
    for name in ("view1_std", "view2_std", "center_box", "clip_floor"):
        _positive(f"data.{name}", getattr(d, name))
    _require(d.n_val >= 0, f"data.n_val must be an integer >= 0, got {d.n_val}")
    _require(0.0 <= d.rho <= 1.0, f"data.rho must be in [0, 1], got {d.rho}")
    rho_used = d.rho > 0 or bool(cfg.grid.rho)
    _require(
        not rho_used or d.n_features >= d.n_classes,
        f"data.rho > 0 needs data.n_features >= data.n_classes ({d.n_classes}), got {d.n_features}",
    )
    _choice("data.weight_metric", d.weight_metric, WEIGHT_METRICS)
    for name in ("view2_mean", "view2_offset", "pixel_noise"):
        _finite(f"data.{name}", getattr(d, name))
    _require(d.pixel_noise >= 0, f"data.pixel_noise must be >= 0, got {d.pixel_noise}")
    _require(
        1 <= d.n_test_per_class <= 173,
        f"data.n_test_per_class must be in 1..173 (digits' smallest class has 174), "
        f"got {d.n_test_per_class}",
    )
    for name in ("n_types", "image_size"):
        _positive(f"data.{name}", getattr(d, name), integer=True)
    _require(0 <= d.defect_depth <= 1, f"data.defect_depth must be in [0, 1], got {d.defect_depth}")
    m = cfg.model
    _require(
        len(m.hidden) > 0 and all(isinstance(h, int) and h > 0 for h in m.hidden),
        f"model.hidden must be a non-empty list of positive integers, got {list(m.hidden)}",
    )
    _choice("model.activation", m.activation, sorted(ACTIVATIONS))
    _choice("model.init", m.init, sorted(INITS))
    _choice("optim.name", cfg.optim.name, OPTIMIZERS)
    _positive("optim.lr", cfg.optim.lr)
    t = cfg.train
    _positive("train.epochs", t.epochs, integer=True)
    _positive("train.batch_size", t.batch_size, integer=True)
    n_train = n_train_rows(cfg)
    if d.source == "digits":
        left = n_train + d.n_val
        _require(
            n_train >= 1,
            f"data.n_val must be < the {left} digits rows left after the test split"
            f" (data.n_test_per_class={d.n_test_per_class}), got {d.n_val}",
        )
    _require(
        t.batch_size <= n_train,
        f"train.batch_size must be <= the training rows ({n_train}), got {t.batch_size}",
    )
    _choice("train.loss", t.loss, LOSS_REDUCTIONS)
    _choice("train.impl", t.impl, IMPLS)
    _choice("matmul_precision", cfg.matmul_precision, MATMUL_PRECISIONS)
    _require(
        0 <= cfg.dependence_seeds <= cfg.seeds,
        f"dependence_seeds must be in 0..seeds ({cfg.seeds}), got {cfg.dependence_seeds}",
    )
    for axis, values in grid_axes(cfg).items():
        _require(
            axis == "lr" or d.source == "blobs",
            f"grid.{axis} applies to data.source=blobs only, got {d.source} (grid.lr: any)",
        )
        _require(len(values) > 0, f"grid.{axis} must be a non-empty list of numbers, got []")
        for v in values:
            if axis == "rho":
                _require(0.0 <= v <= 1.0, f"grid.rho values must be in [0, 1], got {v}")
            elif axis == "view2_offset":
                _finite(f"grid.{axis}", v)
            else:
                _positive(f"grid.{axis}", v)
    return cfg


def grid_axes(cfg: Config) -> dict[str, list[float]]:
    """The gridded axes of cfg, in GridConfig field order."""
    return {k: list(v) for k, v in vars(cfg.grid).items() if v is not None}


def n_classes(cfg: Config) -> int:
    """Classes of the configured source (digits: 10; parts: good/defective per type)."""
    return {"blobs": cfg.data.n_classes, "digits": 10, "parts": 2 * cfg.data.n_types}[
        cfg.data.source
    ]


def n_train_rows(cfg: Config) -> int:
    """Rows the models train on (held-out n_val rows excluded)."""
    d = cfg.data
    if d.source == "digits":
        return 1797 - 10 * d.n_test_per_class - d.n_val
    return d.n_train
