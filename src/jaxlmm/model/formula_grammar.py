"""The allow-listed grammar of formulas: nothing in a formula can run code.

formulaic evaluates every term of a formula as a Python expression (and
``{...}`` as arbitrary Python), so a formula is untrusted input.  Before any
part of a formula reaches formulaic it is tokenized and checked here:

- tokens are column names (plain or in backquotes), numbers, the formula
  operators ``~ + - * / : ^ ** | ||``, parentheses, and ``,``/``=`` inside
  the calls below; anything else (``{}``, ``[]``, quotes, ``;``, ``$``, ``@``,
  ``%``, ...) is a ``FormulaError`` naming the character;
- a name followed by ``(`` must be one of ``FUNCTIONS``; no other call, no
  call of a parenthesized expression;
- ``name=`` appears only inside a call, with a keyword that function takes;
- a name containing ``__`` or a dotted component starting with ``_`` is
  refused (attribute access such as ``x.__class__``);
- every other name must be a column of the data (``compile_expression``):
  formulaic then receives it in backquotes, so it is looked up, never
  evaluated, and the functions are resolved only from ``formula_context()``.

The rewritten text keeps R's meaning: ``^`` inside ``I()`` is a power
(Python's ``**``), ``TRUE``/``FALSE`` are booleans, and ``factor(x)`` is a
treatment-coded factor named ``factor(x)level`` as in lme4.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, FormulaError

# function -> keywords it accepts
FUNCTIONS: dict[str, frozenset[str]] = {
    "log": frozenset(), "log10": frozenset(), "log2": frozenset(), "log1p": frozenset(),
    "exp": frozenset(), "expm1": frozenset(), "sqrt": frozenset(), "abs": frozenset(),
    "scale": frozenset({"center", "scale", "ddof"}), "center": frozenset(),
    "poly": frozenset({"degree", "raw"}), "I": frozenset(), "factor": frozenset(), "C": frozenset(),
    "offset": frozenset(),
    # covariance structures of random-effects terms, name(expr | group) (formula.STRUCTURES)
    "us": frozenset(), "diag": frozenset(), "ar1": frozenset(), "cs": frozenset(),
    "ou": frozenset(), "gau": frozenset(), "pos": frozenset(),
}
_BOOLEANS = {"TRUE": "True", "FALSE": "False", "True": "True", "False": "False"}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<quoted>`[^`]+`)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_.][A-Za-z0-9_.]*)
  | (?P<op>\*\*|\|\||[-+*/:^(),|~=])
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str   # "quoted", "number", "name", "op"
    text: str
    pos: int


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; any character outside the grammar is a ``FormulaError``."""
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            hint = " (formulaic's {...} Python expressions are not allowed)" if ch in "{}" else ""
            raise FormulaError(f"Unknown operator {ch!r} at position {pos} in formula {text!r}: "
                               f"not allowed in a formula{hint}")
        if m.lastgroup != "ws":
            out.append(Token(m.lastgroup, m.group(), pos))
        pos = m.end()
    return out


def _unquote(token: Token) -> str:
    return token.text[1:-1] if token.kind == "quoted" else token.text


def _check_name(token: Token, text: str) -> None:
    name = token.text
    if token.kind == "name" and ("__" in name or any(part.startswith("_") for part in name.split(".")[1:])):
        raise FormulaError(f"{name!r} in formula {text!r} is not allowed: attribute access and "
                           "names with '__' are not part of the formula grammar")


@dataclass(frozen=True)
class _Role:
    """What a name token is: a call, a keyword argument, a boolean value or a variable."""

    kind: str  # "call", "keyword", "boolean", "variable"


def _roles(tokens: list[Token], text: str) -> list[_Role | None]:
    """Check the call structure and classify each token (``None`` for numbers and operators)."""
    roles: list[_Role | None] = []
    calls: list[str | None] = []  # per open parenthesis: the function it calls, or None
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        prev = tokens[i - 1] if i else None
        opens_call = nxt is not None and nxt.text == "("
        if tok.kind in ("name", "quoted"):
            _check_name(tok, text)
            if opens_call:
                if tok.kind == "quoted" or tok.text not in FUNCTIONS:
                    allowed = ", ".join(sorted(FUNCTIONS))
                    raise FormulaError(f"function {_unquote(tok)!r} is not allowed in formula {text!r}; "
                                       f"allowed functions: {allowed}")
                roles.append(_Role("call"))
            elif nxt is not None and nxt.text == "=":
                inside = calls[-1] if calls else None
                if tok.kind != "name" or inside is None or tok.text not in FUNCTIONS[inside]:
                    where = f"{inside}()" if inside else "the formula"
                    raise FormulaError(f"keyword {tok.text!r} is not allowed in {where} in formula {text!r}")
                roles.append(_Role("keyword"))
            elif prev is not None and prev.text == "=" and tok.text in _BOOLEANS:
                roles.append(_Role("boolean"))
            else:
                roles.append(_Role("variable"))
            continue
        if tok.text == "(":
            if prev is not None and (prev.kind == "number" or prev.text == ")"):
                raise FormulaError(f"'(' at position {tok.pos} in formula {text!r} calls something that "
                                   "is not a function name")
            calls.append(prev.text if prev is not None and roles[-1] is not None
                         and roles[-1].kind == "call" else None)
        elif tok.text == ")":
            if calls:
                calls.pop()
        elif tok.text == "=" and not (roles and roles[-1] is not None and roles[-1].kind == "keyword"):
            raise FormulaError(f"'=' at position {tok.pos} in formula {text!r} must follow a keyword argument "
                               "such as poly(x, 2, raw = TRUE)")
        elif tok.text == "," and not (calls and calls[-1] is not None):
            raise FormulaError(f"{tok.text!r} at position {tok.pos} in formula {text!r} is only allowed "
                               "between the arguments of a function such as poly(x, 2)")
        roles.append(None)
    return roles


def check_formula_text(text: str) -> None:
    """Raise ``FormulaError`` unless every token of ``text`` is in the grammar."""
    tokens = tokenize(text)
    _roles(tokens, text)


@dataclass(frozen=True)
class Expression:
    """One formula part, rewritten for formulaic, and the columns it reads."""

    text: str                  # what formulaic parses
    variables: tuple[str, ...]  # column names, in order of first use


def _needs_quotes(name: str) -> bool:
    return not name.isidentifier() or keyword.iskeyword(name) or name in FUNCTIONS or name in _BOOLEANS \
        or name == "np"


def compile_expression(expr: str, columns, where: str) -> Expression:
    """Check ``expr`` and rewrite it for formulaic.

    Every variable must be a column of the data (``DataError`` naming it and
    ``where`` otherwise); columns whose names are not plain identifiers are
    backquoted; ``^`` inside ``I()`` becomes ``**`` and ``TRUE``/``FALSE``
    become Python's booleans.
    """
    tokens = tokenize(expr)
    roles = _roles(tokens, expr)
    columns = set(map(str, columns))
    pieces: list[str] = []
    variables: list[str] = []
    in_identity: list[bool] = []  # per open parenthesis: inside I(...)?
    for tok, role in zip(tokens, roles):
        text = tok.text
        if role is not None and role.kind == "variable":
            name = _unquote(tok)
            if name not in columns:
                avail = ", ".join(sorted(columns)[:12])
                raise DataError(f"column {name!r} (used in {where}) not found in data; columns are: {avail}")
            if name not in variables:
                variables.append(name)
            text = f"`{name}`" if _needs_quotes(name) else name
        elif role is not None and role.kind == "boolean":
            text = _BOOLEANS[text]
        elif text == "(":
            opened_identity = bool(pieces) and pieces[-1] == "I"
            in_identity.append(opened_identity or (bool(in_identity) and in_identity[-1]))
        elif text == ")" and in_identity:
            in_identity.pop()
        elif text == "^" and in_identity and in_identity[-1]:
            text = "**"
        pieces.append(text)
    return Expression(_join(pieces), tuple(variables))


def _join(pieces: list[str]) -> str:
    out = ""
    for piece in pieces:
        tight = piece in "(),=" or (out.endswith(("(", "=")) or not out)
        out += piece if tight else f" {piece}"
    return out.replace(" ,", ",")


def _factor(data, *args, **kwargs):
    from formulaic.transforms.contrasts import C

    return C(data, *args, **kwargs)


def formula_context() -> dict:
    """The functions formulaic may resolve beyond its own transforms (``I``, ``C``, ``poly``, ...)."""
    return {"sqrt": np.sqrt, "abs": np.abs, "log1p": np.log1p, "expm1": np.expm1, "factor": _factor}


def is_offset_call(term: str) -> str | None:
    """The argument of ``term`` when it is exactly ``offset(...)``, else ``None``."""
    tokens = tokenize(term)
    if len(tokens) >= 3 and tokens[0].text == "offset" and tokens[1].text == "(" and tokens[-1].text == ")":
        depth = 0
        for tok in tokens[1:-1]:
            depth += tok.text == "("
            depth -= tok.text == ")"
            if depth == 0:
                return None
        return term[tokens[1].pos + 1:tokens[-1].pos].strip()
    return None


def check_no_offset(expr: str, where: str) -> None:
    """``offset()`` is only allowed as a top-level term of the fixed part."""
    if any(t.kind == "name" and t.text == "offset" for t in tokenize(expr)):
        raise FormulaError(f"offset() must be a term of its own in the fixed part, not inside {where}")
