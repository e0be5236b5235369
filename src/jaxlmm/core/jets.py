"""Second-order forward derivatives (jets) of small scalar maps, in NumPy, for a stack of points.

A ``Jet`` carries a value and its gradient and Hessian with respect to ``n``
seed variables, for ``B`` points at once: shapes (B,), (B, n), (B, n, n).
Arithmetic follows the chain rule to second order,

    (a b)'' = a'' b + a b'' + a' b'^T + b' a'^T,   f(a)'' = f'(a) a'' + f''(a) a' a'^T,

which is all that the map from lme4's profile parameters (sd, atanh(cor),
log sigma) to (theta, log sigma) needs: products, quotients, a square root,
tanh and exp, through the Cholesky factor of each term's correlation matrix.
The host evaluates these maps between calls of the compiled block program, so
the profile adds no compiled program of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import smallmat


@dataclass(frozen=True)
class Jet:
    value: np.ndarray   # (B,)
    grad: np.ndarray    # (B, n)
    hess: np.ndarray    # (B, n, n)

    @staticmethod
    def seeds(x: np.ndarray) -> list["Jet"]:
        """The columns of ``x`` (B, n) as independent variables."""
        B, n = x.shape
        eye = np.eye(n)
        zero = np.zeros((B, n, n))
        return [Jet(x[:, i], np.broadcast_to(eye[i], (B, n)), zero) for i in range(n)]

    @staticmethod
    def constant(c: float, like: "Jet") -> "Jet":
        return Jet(np.full_like(like.value, c), np.zeros_like(like.grad), np.zeros_like(like.hess))

    def __add__(self, other: "Jet") -> "Jet":
        return Jet(self.value + other.value, self.grad + other.grad, self.hess + other.hess)

    def __sub__(self, other: "Jet") -> "Jet":
        return Jet(self.value - other.value, self.grad - other.grad, self.hess - other.hess)

    def __mul__(self, other: "Jet") -> "Jet":
        a, b = self, other
        cross = np.einsum("bi,bj->bij", a.grad, b.grad)
        return Jet(a.value * b.value, a.value[:, None] * b.grad + b.value[:, None] * a.grad,
                   a.value[:, None, None] * b.hess + b.value[:, None, None] * a.hess + cross
                   + np.swapaxes(cross, 1, 2))

    def __truediv__(self, other: "Jet") -> "Jet":
        return self * other.apply(1.0 / other.value, -1.0 / other.value ** 2, 2.0 / other.value ** 3)

    def apply(self, f0, f1, f2) -> "Jet":
        """``f(self)`` given ``f``, ``f'`` and ``f''`` at ``self.value``."""
        return Jet(f0, f1[:, None] * self.grad,
                   f1[:, None, None] * self.hess + f2[:, None, None] * np.einsum("bi,bj->bij", self.grad, self.grad))

    def sqrt(self) -> "Jet":
        r = np.sqrt(self.value)
        with np.errstate(divide="ignore"):
            return self.apply(r, 0.5 / r, -0.25 / (r * self.value))

    def tanh(self) -> "Jet":
        t = np.tanh(self.value)
        return self.apply(t, 1.0 - t * t, -2.0 * t * (1.0 - t * t))

    def exp(self) -> "Jet":
        e = np.exp(self.value)
        return self.apply(e, e, e)


def cholesky(R: list[list[Jet | None]]) -> list[list[Jet | None]]:
    """Lower Cholesky factor of a small symmetric matrix of jets (``R[i][j]``, i >= j, filled)."""
    return smallmat.cholesky(R, sqrt=Jet.sqrt)


def chain(outer_grad: np.ndarray, outer_hess: np.ndarray, inner: list[Jet]):
    """Gradient and Hessian of ``F(y(x))`` from those of F in y and the jets ``y_m(x)``.

    ``g = J^T g_F``, ``H = J^T H_F J + sum_m (g_F)_m y_m''`` with ``J = dy/dx``.
    """
    J = np.stack([y.grad for y in inner], axis=1)                     # (B, m, n)
    T = np.stack([y.hess for y in inner], axis=1)                     # (B, m, n, n)
    g = np.einsum("bm,bmn->bn", outer_grad, J)
    H = np.einsum("bmi,bmk,bkj->bij", J, outer_hess, J) + np.einsum("bm,bmij->bij", outer_grad, T)
    return g, 0.5 * (H + np.swapaxes(H, 1, 2))
