"""Grade text for exact numbers, sizes and names (used by the Grade exporter).

Grade folds constant expressions exactly (constfold.py), so an exact rational is written as text
that folds back to the very same Fraction: a decimal literal when its expansion terminates
(``0.1``, ``1.25e-300``, the full expansion of a subnormal), else an exact division
``(1.0 / 3.0)``. The lexer caps literals at MAX_LITERAL_CHARS characters and exponents at
+-3000, so longer integers are written as ``(hi * 1e900 + lo)``.
"""

from __future__ import annotations

import re
from fractions import Fraction

from ..ir.dims import Dim
from ..ir.formats import FORMATS
from ..ir.nodes import TensorType
from .constfold import MAX_LITERAL_CHARS

__all__ = ["KEYWORDS", "fraction_text", "float_text", "dim_text", "type_text", "identifier",
           "is_plain_name"]

KEYWORDS = frozenset({"const", "fn", "in", "requires", "let", "return", "as", "and", "or", "not",
                      "true", "false"})
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z_0-9]*\Z")
_CHUNK = 900                 # digits per integer piece, well inside MAX_LITERAL_CHARS
_MAX_EXP10 = 2900            # parse_number refuses exponents beyond 3000
_PLAIN_DIGITS = 24           # decimals longer than this print in scientific form


def is_plain_name(s: str) -> bool:
    """Whether s can be written as a Grade name (a NAME token that is not a keyword)."""
    return bool(_NAME_RE.match(s)) and s not in KEYWORDS


def identifier(s: str) -> str:
    """s made into a NAME token (invalid characters become '_'; keywords get a '_' suffix)."""
    out = re.sub(r"[^A-Za-z_0-9]", "_", s) or "v"
    if out[0].isdigit():
        out = "v" + out
    return out + "_" if out in KEYWORDS or out in FORMATS else out


def _int_text(n: int) -> str:
    """A non-negative integer; beyond _CHUNK digits as an exact sum of products."""
    s = str(n)
    if len(s) <= _CHUNK:
        return s
    hi, lo = divmod(n, 10 ** _CHUNK)
    return f"({_int_text(hi)} * 1e{_CHUNK} + {lo})"


def _scientific(digits: str, exp10: int) -> str | None:
    """The integer ``digits`` times 10**exp10 as ``d.ddde±X`` (None: too long to lex)."""
    kept = digits.rstrip("0") or "0"
    exp10 += len(digits) - len(kept)
    e = exp10 + len(kept) - 1
    text = kept[0] + ("." + kept[1:] if len(kept) > 1 else "") + f"e{e}"
    if abs(e) > _MAX_EXP10 or len(text) > MAX_LITERAL_CHARS:
        return None
    return text


def _unsigned(a: Fraction, float_style: bool) -> str:
    num, den = a.numerator, a.denominator
    if den == 1:
        s = str(num)
        if len(s) <= _PLAIN_DIGITS:
            return s + (".0" if float_style else "")
        sci = _scientific(s, 0)
        return sci if sci is not None else _int_text(num)
    d, twos, fives = den, 0, 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    k = max(twos, fives)
    if d == 1 and k <= _MAX_EXP10 // 2:  # terminating: num * 10**k / den is an integer
        n = num * 10 ** k // den
        s = str(n)
        if k <= _PLAIN_DIGITS and len(s) <= _PLAIN_DIGITS:
            s = s.rjust(k + 1, "0")
            return f"{s[:-k]}.{s[-k:]}"
        sci = _scientific(s, -k)
        if sci is not None:
            return sci
    p, q = _int_text(num), _int_text(den)
    if float_style:
        p = p + ".0" if p.isdigit() else p
        q = q + ".0" if q.isdigit() else q
    return f"({p} / {q})"


def fraction_text(x: Fraction, float_style: bool = True) -> str:
    """Grade text that folds to exactly x (negative values start with unary '-')."""
    body = _unsigned(abs(Fraction(x)), float_style)
    return "-" + body if x < 0 else body


def float_text(x: float) -> str:
    """A finite float as the shortest literal that reads back as the same float (ranges):
    Python's repr() is valid Grade number syntax for finite values (``1e-05``, ``-2.5``)."""
    return repr(float(x))


def dim_text(d: Dim) -> str:
    """A size as a Grade size expression (``N/16``, ``2*K + 1``, ``K*K``, ``5 - N``)."""
    if not d.terms:
        return "0"
    ordered = [t for t in d.terms if t[0] != ()] + [t for t in d.terms if t[0] == ()]
    if ordered[0][1] < 0 and ordered[-1][0] == () and ordered[-1][1] > 0:
        ordered = [ordered[-1]] + ordered[:-1]  # a positive constant first reads better
    parts: list[str] = []
    for i, (mono, c) in enumerate(ordered):
        a = abs(c)
        factors = [s for s, p in mono for _ in range(p)]
        if not factors:
            body = str(a.numerator)
        else:
            body = "*".join(([str(a.numerator)] if a.numerator != 1 else []) + factors)
        if a.denominator != 1:
            body = f"{body}/{a.denominator}"
        if i == 0:
            parts.append(("-" if c < 0 else "") + body)
        else:
            parts.append(f" {'-' if c < 0 else '+'} {body}")
    return "".join(parts)


def type_text(t: TensorType) -> str:
    """A tensor type as Grade writes it: ``bf16[T, D]``, ``f32``."""
    return t.fmt.name + ("[" + ", ".join(dim_text(d) for d in t.shape) + "]" if t.shape else "")
