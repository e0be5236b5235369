"""lme4 formula syntax: split ``y ~ fixed + (expr | g)`` into its parts.

Random-effects terms are parenthesized ``(expr | group)`` terms at the top
level of the right-hand side, expanded as lme4's ``findbars`` does:

- ``(x || g)``      -> ``(1 | g) + (0 + x | g)`` (one uncorrelated term per column)
- ``(1 | a/b)``     -> ``(1 | b:a) + (1 | a)``; ``a/b/c`` -> ``c:b:a``, ``b:a``, ``a``
- ``(1 | a:b)``     -> one term grouped by the interaction of ``a`` and ``b``
- ``us(x | g)``     -> ``(x | g)`` (glmmTMB's name for lme4's unstructured covariance)
- ``diag(x | g)``   -> one term whose covariance is diagonal (glmmTMB's heterogeneous
  diagonal; for factors it differs from lme4's ``||``, which does not decorrelate them)
- ``ar1(0 + factor(t) | g)``, ``cs(0 + f | g)`` -> one term with glmmTMB's AR(1) over the
  levels of a factor, or heterogeneous compound symmetry (``core/params/covfuns.py``)
- ``exp(0 + pos(x, y) | g)``, ``gau(...)``, ``ou(0 + pos(t) | g)`` -> spatial and temporal
  covariances over coordinates (``model/structured_terms.py``)

Everything else is the fixed-effects formula, handed to formulaic.  Errors are
``FormulaError`` naming the offending part of the formula.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import FormulaError
from .formula_grammar import check_formula_text, check_no_offset, is_offset_call


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(expr | group)`` after expansion."""

    expr: str                    # left of the bar, e.g. "1 + Days", "0 + x"
    group_vars: tuple[str, ...]  # variables whose interaction is the grouping factor
    cov: str = "us"              # covariance structure: "us" (lme4's, unstructured) or "diag"
    keyword: bool = field(default=False, compare=False)   # written as a structure call, e.g. us(x | g)

    @property
    def group(self) -> str:
        """lme4's name of the grouping factor, e.g. ``"cask:batch"``."""
        return ":".join(self.group_vars)

    def __str__(self) -> str:
        inner = f"{self.expr} | {self.group}"
        return f"({inner})" if self.cov == "us" else f"{self.cov}({inner})"


@dataclass(frozen=True)
class ParsedFormula:
    text: str
    response: str | None
    fixed: str
    random: tuple[RandomTerm, ...]
    offsets: tuple[str, ...] = ()  # arguments of offset(...) terms of the fixed part


def _check_balanced(text: str) -> None:
    depth = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced parentheses in formula {text!r}: unexpected ')' at position {i}")
    if depth:
        raise FormulaError(f"unbalanced parentheses in formula {text!r}: {depth} '(' not closed")


def _split_top(text: str, seps: str) -> list[tuple[str, str]]:
    """Split at depth-0 characters in ``seps``; returns (separator, piece) pairs."""
    out, depth, start, sep = [], 0, 0, "+"
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and ch in seps:
            out.append((sep, text[start:i].strip()))
            sep, start = ch, i + 1
    out.append((sep, text[start:].strip()))
    return out


def _find_bar(inner: str) -> tuple[int, int] | None:
    """Position and width (1 or 2) of the depth-0 bar in ``inner``."""
    depth = 0
    for i, ch in enumerate(inner):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and ch == "|":
            return i, 2 if inner[i + 1:i + 2] == "|" else 1
    return None


def _is_wrapped(term: str) -> bool:
    """True when ``term`` is one parenthesized group ``( ... )``."""
    if not (term.startswith("(") and term.endswith(")")):
        return False
    depth = 0
    for i, ch in enumerate(term):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(term) - 1:
            return False
    return True


_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$|^`[^`]+`$")


def _group_vars(group: str, term: str) -> list[tuple[str, ...]]:
    """Expand a grouping expression into the grouping variables of each term."""
    if not group:
        raise FormulaError(f"empty grouping factor on the right of '|' in {term}")
    chain = [piece.strip() for piece in group.split("/")]
    out = []
    for piece in chain:
        vars_ = tuple(v.strip().strip("`") for v in piece.split(":"))
        for v in vars_:
            if not v or not _NAME.match(v) and not v.replace(" ", "").isidentifier():
                raise FormulaError(f"grouping factor {piece!r} in {term} is not a column name or an interaction a:b")
        out.append(vars_)
    # a/b/c -> c:b:a, b:a, a  (lme4's expandSlash)
    expanded = []
    for depth in range(len(out), 0, -1):
        vars_: tuple[str, ...] = ()
        for piece in reversed(out[:depth]):
            vars_ += piece
        expanded.append(vars_)
    return expanded


def _expand_double_bar(expr: str, term: str) -> list[str]:
    """``(1 + x + z || g)`` -> ``1``, ``0 + x``, ``0 + z`` (lme4's expandDoubleVerts)."""
    pieces = _split_top(expr, "+-")
    labels, intercept = [], True
    for sep, piece in pieces:
        if piece in ("", "1"):
            if sep == "-" and piece == "1":
                intercept = False
            continue
        if piece == "0":
            intercept = False
            continue
        if sep == "-":
            raise FormulaError(f"cannot remove {piece!r} in uncorrelated term {term}")
        labels.append(piece)
    return (["1"] if intercept else []) + [f"0 + {label}" for label in labels]


STRUCTURES = ("us", "diag", "ar1", "cs", "ou", "exp", "gau")  # covariance structures: name(expr | group)


def _structure_call(term: str) -> tuple[str, str]:
    """``diag(x | g)`` -> ("diag", "(x | g)"); any other term -> ("us", term)."""
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\(.*\))$", term, re.S)
    if m and m.group(1) in STRUCTURES and _is_wrapped(m.group(2)):
        return m.group(1), m.group(2)
    return "us", term


def parse_formula(text: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part and random terms."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("formula must be a non-empty string such as 'y ~ x + (1 | g)'")
    _check_balanced(text)
    check_formula_text(text)
    sides = _split_top(text, "~")
    if len(sides) == 1:
        raise FormulaError(f"formula {text!r} has no '~'")
    if len(sides) > 2:
        raise FormulaError(f"formula {text!r} has more than one '~'")
    lhs, rhs = sides[0][1], sides[1][1]
    if not rhs:
        raise FormulaError(f"formula {text!r} has nothing on the right of '~'")

    fixed_parts: list[str] = []
    offsets: list[str] = []
    random: list[RandomTerm] = []
    for sep, term in _split_top(rhs, "+-"):
        if not term:
            if sep == "-" or fixed_parts or random:
                raise FormulaError(f"operator {sep!r} is missing an argument in {text!r}")
            continue
        cov, wrapped = _structure_call(term)
        if "|" in wrapped and _is_wrapped(wrapped) and _find_bar(wrapped[1:-1]) is not None:
            if sep == "-":
                raise FormulaError(f"cannot subtract the random-effects term {term}")
            inner = wrapped[1:-1]
            pos, width = _find_bar(inner)
            expr, group = inner[:pos].strip(), inner[pos + width:].strip()
            if not expr:
                raise FormulaError(f"empty left side of '|' in random-effects term {term}")
            if "|" in group:
                raise FormulaError(f"more than one '|' in random-effects term {term}")
            groups = _group_vars(group, term)
            if width == 2 and cov != "us":
                raise FormulaError(f"'||' cannot be used inside {cov}(...) in {term}: write {cov}({expr} | {group})")
            exprs = _expand_double_bar(expr, term) if width == 2 else [expr]
            for g in groups:
                random.extend(RandomTerm(e, g, cov, keyword=wrapped != term) for e in exprs)
        elif "|" in term:
            raise FormulaError(
                f"'|' must appear inside a parenthesized random-effects term such as (1 | g), "
                f"as its own '+' term; got {term!r}")
        elif is_offset_call(term) is not None:
            if sep == "-":
                raise FormulaError(f"cannot subtract the offset term {term}")
            offsets.append(is_offset_call(term))
        else:
            check_no_offset(term, "another term")
            if re.match(r"^(" + "|".join(s for s in STRUCTURES if s != "exp") + r")\s*\(", term):
                raise FormulaError(f"{term!r}: a covariance structure needs a random-effects term inside, "
                                   "such as diag(x | g)")
            fixed_parts.append(term if sep == "+" else f"- {term}")
    fixed = " + ".join(p for p in fixed_parts if not p.startswith("-"))
    removed = " ".join(p for p in fixed_parts if p.startswith("-"))
    fixed = (fixed or "1") + (f" {removed}" if removed else "")
    if lhs:
        check_no_offset(lhs, "the response")
    for term in random:
        check_no_offset(term.expr, f"the random-effects term {term}")
    return ParsedFormula(text, lhs or None, fixed, tuple(random), tuple(offsets))
