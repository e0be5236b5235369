"""lme4's names for model-matrix columns, random-effects parameters and groups.

formulaic writes ``location[T.Granada]:trt[T.24]`` and ``Intercept``; R writes
``locationGranada:trt24`` and ``(Intercept)``.  theta is named
``group.row`` on the diagonal of lambda and ``group.row.col`` below it
(``Subject.Days.(Intercept)``); ``confint`` names ``sd_Days|Subject``,
``cor_Days.(Intercept)|Subject`` and ``sigma``.
"""

from __future__ import annotations

import re

_CONTRAST = re.compile(r"^(?P<var>.*)\[(?:T\.)?(?P<level>[^\[\]]*)\]$")


def lme4_column_name(name: str) -> str:
    """``location[T.Granada]:trt[T.24]`` -> ``locationGranada:trt24``."""
    if name == "Intercept":
        return "(Intercept)"
    parts = []
    for part in _split_interaction(name):
        m = _CONTRAST.match(part)
        if m:
            var, level = m.group("var"), m.group("level")
            if var.startswith("C(") and var.endswith(")") and "," not in var:
                var = var[2:-1]
            if var.startswith("poly(") and "raw=True" in var and level.isdigit():
                # formulaic numbers raw polynomial columns from 0, R from 1
                var, level = var.replace("raw=True", "raw = TRUE"), str(int(level) + 1)
            parts.append(_r_deparse(var.strip("`")) + level)
        else:
            parts.append(_r_deparse(part.strip("`")))
    return ":".join(parts)


def _r_deparse(name: str) -> str:
    """R's spelling of an expression that formulaic wrote in Python: ``I(x ** 2)`` -> ``I(x^2)``."""
    return name.replace(" ** ", "^").replace("**", "^").replace("`", "")


def _split_interaction(name: str) -> list[str]:
    """Split at ``:`` outside brackets and parentheses."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(name):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == ":" and depth == 0:
            out.append(name[start:i])
            start = i + 1
    out.append(name[start:])
    return out


def _positions(columns: tuple[str, ...], cov: str) -> list[tuple[int, int]]:
    """(row, column) of each reported sd/cor: the diagonal for ``diag``, else the column-major lower
    triangle (of lambda's thetas for ``us``; of the implied covariance for ``ar1`` and ``cs``)."""
    S = len(columns)
    if cov == "diag":
        return [(i, i) for i in range(S)]
    return [(i, j) for j in range(S) for i in range(j, S)]


def theta_names(group: str, columns: tuple[str, ...], cov: str = "us") -> list[str]:
    """lme4's names of one term's theta (column-major lower triangle; the diagonal for ``diag``;
    a structured term's own parameters, ``core/params/structured.py``)."""
    if cov in ("ar1", "cs"):
        from ..core.params.structured import parameter_names

        return [f"{group}.{name}" for name in parameter_names(cov, columns)]
    return [f"{group}.{columns[i]}" if i == j else f"{group}.{columns[i]}.{columns[j]}"
            for i, j in _positions(columns, cov)]


def confint_names(group: str, columns: tuple[str, ...], cov: str = "us") -> list[str]:
    """``confint.merMod(oldNames = FALSE)`` names of one term's sd/cor parameters."""
    return [f"sd_{columns[i]}|{group}" if i == j else f"cor_{columns[i]}.{columns[j]}|{group}"
            for i, j in _positions(columns, cov)]


def unique_group_names(groups: list[str]) -> list[str]:
    """R's ``make.unique``: repeated names get ``.1``, ``.2``, ... (VarCorr's group names)."""
    seen: dict[str, int] = {}
    out = []
    for g in groups:
        if g in seen:
            seen[g] += 1
            out.append(f"{g}.{seen[g]}")
        else:
            seen[g] = 0
            out.append(g)
    return out


def format_level(value) -> str:
    """A factor level as R prints it: integral floats without ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
