"""The RT-method metrics: soaRT3 (the seed's log_beta, log_eta, log_gamma), Taguchi's standard
RT quantities, per-class unit spaces, and the two RT views built from them.

Every function takes a signal `y` and a reference ("unit space") `x` of shape (..., d), in
jax.numpy or NumPy, and broadcasts over the leading axes; results have shape (...).

soaRT3, exactly as the seed computes it (SPEC.md, "The RT-method metrics"):
    beta      = (x.y + 1e-4) / (x.x + 1e-4)
    m, v      = Minkowski_p1(y, beta*x), Minkowski_p4(y, beta*x)
    log_beta  = ln(beta)
    log_eta   = ln(m + 1)
    log_gamma = log_eta - ln(v + 1) = ln((m + 1) / (v + 1))

Policies where the seed's formulas break (documented results, never a silent NaN):
- beta <= 0 (possible only when x.y < -1e-4, i.e. inputs that are not non-negative):
  `log_beta = ln(max(beta, beta_floor))`, `beta_floor = 1e-4` by default, so every beta below
  the floor, and every non-positive one, becomes ln(1e-4) ~ -9.21. Values at or above the floor
  are the seed's ln(beta) exactly. `count_clipped` counts the clipped entries; report it.
  (A sign feature with ln|beta| was rejected: it would double the width of the Bias view and
  give beta = -1 and beta = +1 the same log.) log_eta and log_gamma use the unclipped beta.
- A zero reference x = 0: the 1e-4 terms give beta = 1 (log_beta = 0) whatever the signal, and
  m = ||y||_1, v = ||y||_4. Finite, but it carries no information about the reference; it is
  what `unit_spaces` returns for a class with no training rows.

Scaling laws for a signal scaled by c > 0 (y -> c*y, reference fixed), tested in test_rt.py.
Write delta = 1e-4 / (x.x + 1e-4) (tiny unless x is tiny):
- beta(c*y) = c*beta(y) + (1 - c)*delta exactly, so beta scales with c and
  log_beta shifts by ln(c), up to the delta term.
- The residual y - beta*x scales by c (up to the same delta term), so m and v scale by c.
- log_eta = ln(c*m + 1) is neither invariant nor shifted by ln(c): it grows like
  ln(c) + ln(m) when c*m >> 1 and like c*m when c*m << 1.
- log_gamma = ln((c*m + 1)/(c*v + 1)) is NOT scale-invariant: since m >= v (an L1 norm bounds
  the L4 norm), it is non-decreasing in c, is 0 at c = 0 and rises to ln(m/v) as c -> infinity,
  and always 0 <= log_gamma <= ln(m/v) <= (3/4) ln(d). It is scale-free only where m, v >> 1,
  so the pixel scale of the images (0..16 for digits, 0..255 for 8-bit images) is a modelling
  choice, and an item's brightness leaks into its gamma when residuals are small.
- Scaling the reference instead (x -> c*x) leaves beta*x, hence m, v, log_eta and log_gamma,
  unchanged up to the delta term, and shifts log_beta by -ln(c).

Taguchi's standard RT quantities (no 1e-4 terms), per item against a reference of length d:
    L = x.y,  r = x.x,  beta = L/r,  S_T = y.y,  S_beta = L^2/r,  S_e = ||y - beta*x||^2,
    V_e = S_e/(d - 1),  eta = beta^2/V_e
so S_T = S_beta + S_e. Policies: r = 0 gives beta = S_beta = 0 (no proportional part, all
variation is error); eta = 0 where beta = 0; eta = +inf where V_e = 0 and beta != 0 (a perfect
proportional fit).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

EPS = 1e-4  # the seed's regulariser in beta
BETA_FLOOR = 1e-4  # log_beta = ln(max(beta, BETA_FLOOR)); see the module docstring
WEIGHT_METRICS = ("log_gamma", "log_eta")


class SoaRT3(NamedTuple):
    """The seed's three metrics, each of shape (...)."""

    log_beta: jax.Array
    log_eta: jax.Array
    log_gamma: jax.Array


class Taguchi(NamedTuple):
    """Taguchi's RT quantities, each of shape (...)."""

    L: jax.Array
    r: jax.Array
    beta: jax.Array
    S_T: jax.Array
    S_beta: jax.Array
    S_e: jax.Array
    V_e: jax.Array
    eta: jax.Array


def _as_float(a) -> jax.Array:
    a = jnp.asarray(a)
    return a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(jnp.float32)


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    # Elementwise product and sum, not `@`: exact float32 on TPU too (matmuls default to bf16).
    return (a * b).sum(-1)


def _minkowski4(z: jax.Array) -> jax.Array:
    # Scaled by max|z| so that z**4 cannot overflow float32 for large pixel values.
    a = jnp.abs(z)
    top = a.max(-1, keepdims=True)
    safe = jnp.where(top > 0, top, 1.0)
    return top[..., 0] * ((a / safe) ** 4).sum(-1) ** 0.25


def sensitivity(signal, reference) -> jax.Array:
    """The seed's beta = (x.y + 1e-4)/(x.x + 1e-4), shape (...), sign included."""
    y, x = _as_float(signal), _as_float(reference)
    return (_dot(x, y) + EPS) / (_dot(x, x) + EPS)


def soart3(signal, reference, beta_floor: float = BETA_FLOOR) -> SoaRT3:
    """(log_beta, log_eta, log_gamma), each (...), of signal y against reference x (..., d)."""
    y, x = _as_float(signal), _as_float(reference)
    beta = sensitivity(y, x)
    resid = y - beta[..., None] * x
    m = jnp.abs(resid).sum(-1)
    v = _minkowski4(resid)
    log_eta = jnp.log1p(m)
    return SoaRT3(
        log_beta=jnp.log(jnp.maximum(beta, beta_floor)),
        log_eta=log_eta,
        log_gamma=log_eta - jnp.log1p(v),
    )


def count_clipped(signal, reference, beta_floor: float = BETA_FLOOR) -> jax.Array:
    """How many (item, reference) pairs had beta < beta_floor, so log_beta = ln(beta_floor)."""
    return (sensitivity(signal, reference) < beta_floor).sum()


def taguchi(signal, reference) -> Taguchi:
    """Taguchi's RT quantities of y against x, both (..., d) with d >= 2; see module docstring."""
    y, x = _as_float(signal), _as_float(reference)
    d = jnp.broadcast_shapes(y.shape, x.shape)[-1]
    if d < 2:
        raise ValueError(f"taguchi needs vectors of length d >= 2 (V_e divides by d - 1), got {d}")
    L, S_T = _dot(x, y), _dot(y, y)
    r = jnp.broadcast_to(_dot(x, x), L.shape)
    nonzero = r > 0
    safe_r = jnp.where(nonzero, r, 1.0)
    beta = jnp.where(nonzero, L / safe_r, 0.0)
    S_beta = jnp.where(nonzero, L**2 / safe_r, 0.0)
    # Summed directly rather than S_T - S_beta: no cancellation, never negative.
    S_e = ((y - beta[..., None] * x) ** 2).sum(-1)
    V_e = S_e / (d - 1)
    safe_ve = jnp.where(V_e > 0, V_e, 1.0)
    eta = jnp.where(beta == 0, 0.0, jnp.where(V_e > 0, beta**2 / safe_ve, jnp.inf))
    return Taguchi(L, r, beta, S_T, S_beta, S_e, V_e, eta)


def unit_spaces(x_train, y_train, n_classes: int) -> jax.Array:
    """Per-class mean vectors (n_classes, d) of training rows x_train (n, d), labels (n,).

    Pass training rows only: a test row here would leak into every item's features. A class
    with no rows gets a zero reference (see the module docstring for what soart3 gives then).
    """
    x = _as_float(x_train)
    y = jnp.asarray(y_train)
    sums_KD = jax.ops.segment_sum(x, y, num_segments=n_classes)
    counts_K = jax.ops.segment_sum(jnp.ones(y.shape, x.dtype), y, num_segments=n_classes)
    return sums_KD / jnp.maximum(counts_K, 1.0)[:, None]


def rt_views(
    x, units, weight_metric: str = "log_gamma", beta_floor: float = BETA_FLOOR
) -> tuple[jax.Array, jax.Array]:
    """The RT views (weight, bias), each (..., k), of items x (..., d) against unit spaces (k, d).

    Column j is the item's metric against unit space j: the Weight view is `weight_metric`
    (log_gamma, the seed's choice, or log_eta), the Bias view is log_beta.
    """
    if weight_metric not in WEIGHT_METRICS:
        raise ValueError(
            f"weight_metric={weight_metric!r} is not one of: {', '.join(WEIGHT_METRICS)}"
        )
    metrics = soart3(_as_float(x)[..., None, :], units, beta_floor)
    return getattr(metrics, weight_metric), metrics.log_beta
