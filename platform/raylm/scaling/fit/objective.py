"""The Approach 3 objective with its exact gradient and Hessian, for one or many parameter vectors.

Hoffmann et al. (2022), eq. (3), as replicated by Besiroglu et al. (2024), section 2: with
theta = (a, b, e, alpha, beta), A = exp(a), B = exp(b), E = exp(e),

    pred_i = logsumexp(a - alpha log N_i, b - beta log D_i, e)      (= log L(N_i, D_i))
    r_i    = log L_i - pred_i
    f      = sum_i w_i huber_delta(r_i)                              (summed, not averaged)

with huber(r) = r^2/2 for |r| <= delta, else delta (|r| - delta/2), and point weights w_i
(all 1 for a plain fit, bootstrap multiplicities for a resample). Every function takes
theta as (5,) or (S, 5) (S independent problems) and weights as (n,) or (S, n).

Derivatives, with softmax weights s = (s1, s2, s3) of the three terms:
    d pred / d theta = g_i = (s1, s2, s3, -s1 log N, -s2 log D)
    d2 pred          = J^T diag(s) J - g g^T  (J: d(terms)/d theta, constant)
    grad f = -sum w h'(r) g;   hess f = sum w (h''(r) + h'(r)) g g^T - sum w h'(r) J^T diag(s) J.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raylm.scaling.fit.blocks import run_blocks

PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
N_PARAMS = len(PARAM_NAMES)


@dataclass(frozen=True)
class LogData:
    """Fit data in log space: log N, log D, log L, each of shape (n,)."""

    log_n: np.ndarray
    log_d: np.ndarray
    log_loss: np.ndarray

    @classmethod
    def from_arrays(cls, n_params, n_tokens, loss) -> LogData:
        return cls(*(np.log(np.asarray(v, dtype=float)) for v in (n_params, n_tokens, loss)))

    @property
    def size(self) -> int:
        return int(self.log_n.shape[0])


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber (1964): r^2/2 for |r| <= delta, else delta (|r| - delta/2); written c (r - c/2), c = clip(r)."""
    c = np.clip(r, -delta, delta)
    return c * (r - 0.5 * c)


def log_predict(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """log L(N, D) = logsumexp(a - alpha log N, b - beta log D, e), computed without overflow."""
    t = np.atleast_2d(np.asarray(theta, dtype=float))
    pred = _terms(t, np.asarray(log_n, dtype=float), np.asarray(log_d, dtype=float))[0]
    return pred if np.ndim(theta) > 1 else pred[0]


def objective(theta: np.ndarray, data: LogData, delta: float, weights: np.ndarray | None = None) -> np.ndarray:
    """The summed Huber objective f(theta); shape () for theta (5,), (S,) for theta (S, 5)."""
    f = _evaluate(np.atleast_2d(theta), data, delta, weights, order=0)[0]
    return f if np.ndim(theta) > 1 else f[0]


def objective_and_grad(
    theta: np.ndarray, data: LogData, delta: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """f(theta) and its exact gradient (shapes () and (5,), or (S,) and (S, 5))."""
    f, g, _ = _evaluate(np.atleast_2d(theta), data, delta, weights, order=1)
    return (f, g) if np.ndim(theta) > 1 else (f[0], g[0])


def objective_grad_hess(
    theta: np.ndarray, data: LogData, delta: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """f, exact gradient and exact Hessian (the Huber second derivative taken as 1 inside delta, 0 outside)."""
    f, g, h = _evaluate(np.atleast_2d(theta), data, delta, weights, order=2)
    return (f, g, h) if np.ndim(theta) > 1 else (f[0], g[0], h[0])


_SAFE_EXP = 700.0  # exp(700) is finite in float64; exp(-745) underflows to 0


def _terms(t: np.ndarray, x: np.ndarray, y: np.ndarray):
    """log-sum-exp of the three terms and their softmax weights (s1, s2, s3), never overflowing.

    Rows are shifted by e: pred = e + log(1 + exp(z1 - e) + exp(z2 - e)), exact and free of
    overflow while z - e < 700 across the row (checked from the row's parameters and the data
    range); the rare other rows are redone with the usual per-point max shift.
    """
    a, b, e, alpha, beta = (t[:, k : k + 1] for k in range(N_PARAMS))
    with np.errstate(over="ignore", invalid="ignore"):
        z1 = a - alpha * x
        z2 = b - beta * y
        t1 = np.exp(z1 - e)
        t2 = np.exp(z2 - e)
        s = t1 + t2 + 1.0
        inv = 1.0 / s
        pred, s1, s2, s3 = e + np.log(s), t1 * inv, t2 * inv, inv
    top1 = a[:, 0] - e[:, 0] - np.minimum(alpha[:, 0] * x.min(), alpha[:, 0] * x.max())
    top2 = b[:, 0] - e[:, 0] - np.minimum(beta[:, 0] * y.min(), beta[:, 0] * y.max())
    unsafe = np.flatnonzero(~(np.maximum(top1, top2) < _SAFE_EXP))
    if unsafe.size:
        zs = z1[unsafe], z2[unsafe], np.broadcast_to(e[unsafe], (unsafe.size, z1.shape[1]))
        pred[unsafe], s1[unsafe], s2[unsafe], s3[unsafe] = _terms_max_shift(*zs)
    return pred, s1, s2, s3


def _terms_max_shift(z1, z2, e):
    """The textbook stable log-sum-exp: shift every point by its largest term."""
    m = np.maximum(np.maximum(z1, z2), e)
    with np.errstate(invalid="ignore"):
        u1, u2, u3 = np.exp(z1 - m), np.exp(z2 - m), np.exp(e - m)
        s = u1 + u2 + u3
        return m + np.log(s), u1 / s, u2 / s, u3 / s


_BLOCK_ELEMENTS = 1 << 15  # rows are processed in blocks of about this many (row, point) pairs: cache-sized


def _evaluate(t, data: LogData, delta: float, weights, order: int):
    """f (order 0), plus gradient (1), plus Hessian (2), block by block over the rows of ``t``."""
    n_rows, n_points = t.shape[0], data.size
    if weights is not None:
        weights = np.broadcast_to(np.asarray(weights, dtype=float), (n_rows, n_points))
    f = np.empty(n_rows)
    g = np.empty((n_rows, N_PARAMS)) if order >= 1 else None
    h = np.empty((n_rows, N_PARAMS, N_PARAMS)) if order >= 2 else None
    basis = np.stack([np.ones_like(data.log_n), data.log_n, data.log_d, data.log_n**2,
                      data.log_n * data.log_d, data.log_d**2], axis=1)  # (n, 6)

    def run(rows: slice) -> None:
        out = _evaluate_block(t[rows], data, basis, delta, None if weights is None else weights[rows], order)
        f[rows] = out[0]
        if order >= 1:
            g[rows] = out[1]
        if order >= 2:
            h[rows] = out[2]

    run_blocks(run, n_rows, max(1, _BLOCK_ELEMENTS // max(n_points, 1)))
    return f, g, h


def _evaluate_block(t, data: LogData, basis, delta: float, w, order: int):
    pred, s1, s2, s3 = _terms(t, data.log_n, data.log_d)
    r = data.log_loss - pred
    c = np.clip(r, -delta, delta)  # h'(r)
    h = c * (r - 0.5 * c)
    if w is not None:
        h, c = h * w, c * w
    f = h.sum(axis=1)
    if order == 0:
        return f, None, None
    # Products whose weighted sums over points make the gradient and Hessian; one matmul sums them all.
    prods = np.empty((3 if order == 1 else 9,) + r.shape)
    np.multiply(c, s1, out=prods[0])
    np.multiply(c, s2, out=prods[1])
    np.multiply(c, s3, out=prods[2])
    if order == 2:
        inside = np.abs(r) <= delta
        q = c + (inside if w is None else inside * w)  # w (h'' + h')
        qs1, qs2 = q * s1, q * s2
        for k, (left, right) in enumerate([(qs1, s1), (qs1, s2), (qs1, s3), (qs2, s2), (qs2, s3), (q * s3, s3)]):
            np.multiply(left, right, out=prods[3 + k])
    sums = prods @ basis  # (k, S, 6): sum over points of prod * (1, x, y, x^2, xy, y^2)
    g = -np.stack([sums[0, :, 0], sums[1, :, 0], sums[2, :, 0], -sums[0, :, 1], -sums[1, :, 2]], axis=1)
    if order == 1:
        return f, g, None
    return f, g, _hessian(sums)


def _hessian(sums):
    """sum q g g^T - sum w h' J^T diag(s) J with g = (s1, s2, s3, -x s1, -y s2), see the module docstring.

    ``sums[0:3]`` hold sum w h' s_k * basis, ``sums[3:9]`` sum q s_i s_j * basis for (i, j) in
    (1,1), (1,2), (1,3), (2,2), (2,3), (3,3); basis = (1, x, y, x^2, xy, y^2).
    """
    p11, p12, p13, p22, p23, p33 = sums[3:]
    one, x, y, xx, xy, yy = range(6)
    entries = {
        (0, 0): p11[:, one] - sums[0, :, one], (0, 1): p12[:, one], (0, 2): p13[:, one],
        (0, 3): -p11[:, x] + sums[0, :, x], (0, 4): -p12[:, y],
        (1, 1): p22[:, one] - sums[1, :, one], (1, 2): p23[:, one], (1, 3): -p12[:, x],
        (1, 4): -p22[:, y] + sums[1, :, y], (2, 2): p33[:, one] - sums[2, :, one],
        (2, 3): -p13[:, x], (2, 4): -p23[:, y], (3, 3): p11[:, xx] - sums[0, :, xx],
        (3, 4): p12[:, xy], (4, 4): p22[:, yy] - sums[1, :, yy],
    }
    hess = np.empty((sums.shape[1], N_PARAMS, N_PARAMS))
    for (i, j), value in entries.items():
        hess[:, i, j] = value
        hess[:, j, i] = value
    return hess
