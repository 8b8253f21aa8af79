"""User-facing diagnostics.

Every mistake in a user's program or input becomes a :class:`GradeError` carrying one or more
:class:`Diagnostic` objects, each pointing at a source span. The CLI prints them as
``FILE:LINE:COL: error: message`` followed by the source line and a caret, and exits 1; the API
raises the exception. Nothing else may escape to the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A place in a source text (1-based line and column)."""

    file: str
    line: int
    col: int
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


_LAST_SPLIT: tuple = (None, [])  # the last text split into lines: diagnostics share a text


def _lines(text: str) -> list[str]:
    global _LAST_SPLIT
    last = _LAST_SPLIT
    if last[0] is not text:
        last = _LAST_SPLIT = (text, text.split("\n"))
    return last[1]


@dataclass(frozen=True)
class Diagnostic:
    """One message about one place; severity is 'error', 'warning' or 'note'."""

    message: str
    span: Span | None = None
    severity: str = "error"

    def render(self, sources: dict[str, str] | None = None) -> str:
        """Format as FILE:LINE:COL: severity: message, the source line and a caret."""
        if self.span is None:
            return f"{self.severity}: {self.message}"
        head = f"{self.span}: {self.severity}: {self.message}"
        text = (sources or {}).get(self.span.file)
        if text is None:
            return head
        lines = _lines(text)  # the parser counts lines by "\n" only
        if not (1 <= self.span.line <= len(lines)):
            return head
        src = lines[self.span.line - 1].rstrip("\r").expandtabs(1)
        if len(src) > 200:  # keep very long lines readable around the caret
            start = max(0, self.span.col - 100)
            src = src[start:start + 200]
            col = self.span.col - start
        else:
            col = self.span.col
        # one column per character: control characters must not reach the terminal
        src = "".join(c if c.isprintable() else "?" for c in src)
        width = 1
        if self.span.end_col is not None and self.span.end_col > self.span.col:
            width = min(self.span.end_col - self.span.col, max(1, len(src) - col + 1))
        caret = " " * max(col - 1, 0) + "^" + "~" * (width - 1)
        return f"{head}\n    {src}\n    {caret}"


_SOURCES: dict[str, str] = {}


def register_source(name: str, text: str) -> None:
    """Remember a source text so diagnostics can quote it."""
    _SOURCES[name] = text


def source_text(name: str) -> str | None:
    return _SOURCES.get(name)


class GradeError(Exception):
    """A mistake in the user's program, its inputs or its use of the API."""

    def __init__(self, message: str | list[Diagnostic], span: Span | None = None):
        if isinstance(message, list):
            self.diagnostics = list(message)
        else:
            self.diagnostics = [Diagnostic(message, span)]
        super().__init__(self.render())

    @property
    def span(self) -> Span | None:
        return self.diagnostics[0].span if self.diagnostics else None

    @property
    def message(self) -> str:
        return self.diagnostics[0].message if self.diagnostics else ""

    def render(self) -> str:
        return "\n".join(d.render(_SOURCES) for d in self.diagnostics)

    def __str__(self) -> str:
        return self.render()


class SourceError(GradeError):
    """A GradeError that points into a source text (parse, name, type, shape, effect errors)."""


@dataclass
class DiagnosticSink:
    """Collects several errors so one run reports them together."""

    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    def error(self, message: str, span: Span | None) -> None:
        self.errors.append(Diagnostic(message, span))

    def warn(self, message: str, span: Span | None) -> None:
        self.warnings.append(Diagnostic(message, span, "warning"))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise SourceError(self.errors)
