"""Trait-by-trait covariance matrices (``Sigma_g``, ``Sigma_e``) as functions of their parameters.

- ``us`` (unstructured, the default): ``Sigma = L L^T`` with ``L`` lower triangular; the parameters are
  ``L``'s entries column by column (lme4's theta layout), the diagonal ones bounded below by 0;
- ``diag``: ``Sigma = diag(s^2)``, one SD per trait (bounded below by 0);
- ``fa<r>`` (a rank-r factor plus a diagonal, for many traits): ``Sigma = Lambda Lambda^T + diag(psi^2)``
  with ``Lambda`` (d x r) lower trapezoidal (its entries column by column, the diagonal ones bounded
  below by 0), then ``psi`` (d, bounded below by 0).

Flipping the sign of a column of ``L`` (or of ``Lambda``) leaves ``Sigma`` unchanged: where a diagonal
element is 0 the flip negates the gradient with respect to it (``reflections``, used by the Newton kernel to
leave a boundary point that is no minimum, as for lme4's terms).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ...errors import ArgumentError


class TraitCovariance(NamedTuple):
    """The structure ``kind`` ("us", "diag" or "fa") of a d x d covariance (rank ``r`` for "fa")."""

    kind: str
    d: int
    r: int = 0

    @staticmethod
    def parse(spec: str, d: int, what: str) -> "TraitCovariance":
        text = str(spec).strip().lower()
        if text in ("us", "unstructured"):
            return TraitCovariance("us", d)
        if text == "diag":
            return TraitCovariance("diag", d)
        match = re.fullmatch(r"fa\(?(\d+)\)?", text)
        if match and 1 <= int(match.group(1)) <= d:
            return TraitCovariance("fa", d, int(match.group(1)))
        raise ArgumentError(f"{what}: the trait covariance structure must be 'us', 'diag' or 'fa<r>' with "
                            f"1 <= r <= {d} traits (e.g. 'fa1'), not {spec!r}")

    # ------------------------------------------------------------------ layout of the parameters
    def _tri(self, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of the lower-trapezoidal entries of a d x ``cols`` factor, column by column."""
        rows, columns = [], []
        for j in range(cols):
            for i in range(j, self.d):
                rows.append(i)
                columns.append(j)
        return np.array(rows, int), np.array(columns, int)

    @property
    def n_params(self) -> int:
        if self.kind == "us":
            return self.d * (self.d + 1) // 2
        if self.kind == "diag":
            return self.d
        return len(self._tri(self.r)[0]) + self.d

    def names(self, traits: list[str]) -> list[str]:
        if self.kind == "diag":
            return [f"sd.{t}" for t in traits]
        cols = self.d if self.kind == "us" else self.r
        rows, columns = self._tri(cols)
        label = "L" if self.kind == "us" else "loading"
        out = [f"{label}.{traits[i]}.{j + 1 if self.kind == 'fa' else traits[j]}" for i, j in zip(rows, columns)]
        return out + ([f"psi.{t}" for t in traits] if self.kind == "fa" else [])

    def lower(self) -> np.ndarray:
        if self.kind == "diag":
            return np.zeros(self.d)
        rows, columns = self._tri(self.d if self.kind == "us" else self.r)
        low = np.where(rows == columns, 0.0, -np.inf)
        return np.concatenate([low, np.zeros(self.d)]) if self.kind == "fa" else low

    def start(self, variances: np.ndarray) -> np.ndarray:
        """Parameters of ``diag(variances)`` (``fa``: half of each variance in the first factor, half in psi)."""
        sd = np.sqrt(np.maximum(np.asarray(variances, float), 1e-12))
        if self.kind == "diag":
            return sd
        rows, columns = self._tri(self.d if self.kind == "us" else self.r)
        if self.kind == "us":
            return np.where(rows == columns, sd[rows], 0.0)
        load = np.where(columns == 0, sd[rows] / np.sqrt(2.0), 0.0) * np.where(rows == columns, 1.0, 0.5)
        return np.concatenate([load, sd / np.sqrt(2.0)])

    def reflections(self) -> np.ndarray:
        """(k, k) 0/1: row i marks the entries below diagonal element i in its column (module docstring)."""
        k = self.n_params
        R = np.zeros((k, k), bool)
        if self.kind == "diag":
            return R
        rows, columns = self._tri(self.d if self.kind == "us" else self.r)
        n = len(rows)                   # fa: the loadings come first, psi is not reflected
        for a in range(n):
            if rows[a] == columns[a]:
                R[a, :n] = (columns == columns[a]) & (rows > rows[a])
        return R

    # ------------------------------------------------------------------ the matrix
    def matrix(self, params):
        """``Sigma`` (d x d) from the parameters (pure JAX; NumPy input works too)."""
        params = jnp.asarray(params)
        if self.kind == "diag":
            return jnp.diag(params ** 2)
        if self.kind == "us":
            rows, columns = self._tri(self.d)
            L = jnp.zeros((self.d, self.d), params.dtype).at[rows, columns].set(params)
            return L @ L.T
        rows, columns = self._tri(self.r)
        n_load = len(rows)
        Lam = jnp.zeros((self.d, self.r), params.dtype).at[rows, columns].set(params[:n_load])
        return Lam @ Lam.T + jnp.diag(params[n_load:] ** 2)
