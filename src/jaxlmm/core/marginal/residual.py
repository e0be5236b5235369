"""The residual variance of a marginal model: ``R = diag(r_i(psi) / w_i)`` (``marginal/criterion.py``).

Two forms, both functions of the residual parameters ``psi`` (the last parameters of ``phi``):

- without ``dispformula``: one standard deviation, ``psi = (s,)``, ``r_i = s^2`` with bound
  ``s >= 0`` (a structured term may absorb all residual variance, ``s -> 0``);
- with ``dispformula``: glmmTMB's log-linear dispersion model, ``r_i = exp(x_i^T delta)`` with
  ``x_i`` the row of the dispformula's model matrix (treatment contrasts for factors: ``~ location``
  is one variance per level, ``~ Days`` the trend ``log r_i = d_0 + d_1 Days_i``), ``delta``
  unbounded.  ``dr_i/d delta_a = r_i x_ia`` and ``d2r_i/d delta_a d delta_b = r_i x_ia x_ib``.

Rows with the same covariates share one variance: ``codes`` (n,) numbers these levels and
``level_X`` (L, m) holds one row of each (a residual SD per level for the results).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ResidualVariance:
    """``X`` (n, m): the dispformula's model matrix, or None (one residual SD); ``codes`` (n,) and
    ``level_X`` (L, m) the rows' levels; ``names`` the parameters', ``levels`` the levels' names."""

    X: np.ndarray | None
    codes: np.ndarray
    level_X: np.ndarray | None
    names: tuple[str, ...]
    levels: tuple[str, ...]

    @classmethod
    def single_sd(cls, n: int) -> "ResidualVariance":
        """One residual SD for all ``n`` rows (no ``dispformula``)."""
        return cls(None, np.zeros(n, dtype=np.int64), None, ("residual_sd.Residual",), ("Residual",))

    @property
    def log_linear(self) -> bool:
        return self.X is not None

    @property
    def n_params(self) -> int:
        return 1 if self.X is None else self.X.shape[1]

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def linear_in_levels(self) -> bool:
        """Whether the levels' variances are a one-to-one reparametrization of ``psi`` (one SD, or a
        dispformula saturated on its levels such as ``~ factor``): there the covariance is linear in
        the levels' variances (``marginal/kenward_roger.py``)."""
        if self.X is None:
            return True
        L, m = self.level_X.shape
        return L == m and np.linalg.matrix_rank(self.level_X) == m

    def lower(self) -> np.ndarray:
        return np.zeros(1) if self.X is None else np.full(self.n_params, -np.inf)

    def upper(self) -> np.ndarray:
        return np.full(self.n_params, np.inf)

    def start(self, scale: float) -> np.ndarray:
        """Every row's residual SD ``scale``."""
        if self.X is None:
            return np.array([scale])
        target = np.full(self.level_X.shape[0], 2.0 * np.log(scale))
        return np.linalg.lstsq(self.level_X, target, rcond=None)[0]

    def covariates(self, rows) -> np.ndarray | None:
        """``x_i`` of ``rows`` (n, m), or None for one SD."""
        return None if self.X is None else self.X[rows]

    def jets(self, psi: np.ndarray, x: np.ndarray | None, shape: tuple):
        """``r``, its first derivatives (one per parameter) and second derivatives ``{(a, b): ...}``
        (``a <= b``, only those not identically 0), for lanes ``psi`` (B, m) at rows of covariates
        ``x`` (shape + (m,); None for one SD, then ``shape`` is the rows' shape); arrays (B,) + shape."""
        psi = np.asarray(psi, float)
        B = psi.shape[0]
        if self.X is None:
            s = psi[:, 0].reshape((B,) + (1,) * len(shape))
            ones = np.ones((B,) + tuple(shape))
            return s * s * ones, [2.0 * s * ones], {(0, 0): 2.0 * ones}
        r = np.exp(np.einsum("...m,Bm->B...", x, psi))
        first = [r * x[..., a] for a in range(self.n_params)]
        second = {}
        for a in range(self.n_params):
            for b in range(a, self.n_params):
                xx = x[..., a] * x[..., b]
                if np.any(xx):
                    second[(a, b)] = r * xx
        return r, first, second

    def variances(self, psi: np.ndarray, rows) -> np.ndarray:
        """``r_i`` of ``rows`` at one ``psi``."""
        x = self.covariates(rows)
        n = len(self.codes[rows])
        return self.jets(np.asarray(psi, float)[None], x, (n,))[0][0]

    def level_sd(self, psi: np.ndarray) -> np.ndarray:
        """The residual SD of each level: (L,) for one ``psi``, (B, L) for lanes (B, m)."""
        psi = np.asarray(psi, float)
        if self.X is None:
            return psi[..., :1].copy()
        return np.exp(0.5 * (psi @ self.level_X.T))

    def variances_jax(self, psi, rows):
        """``r_i`` of ``rows`` in ``jax.numpy`` (``marginal/jax_criterion.py``)."""
        import jax.numpy as jnp

        if self.X is None:
            return psi[0] ** 2 * jnp.ones(len(self.codes[rows]))
        return jnp.exp(jnp.asarray(self.X[rows]) @ psi)
