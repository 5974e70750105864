"""Diagnostics: what check reports to policy authors, with a stable code and a file:line:col."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CODES", "Diagnostic", "Span"]

# The closed set of diagnostic codes. Tests and `--format json` key on these, never on message text.
CODES: dict[str, str] = {
    "yaml-syntax": "the file is not valid YAML",
    "yaml-unsafe": "the file uses YAML tags or anchors/aliases, which policies may not use",
    "not-a-mapping": "a policy file (or a rule) must be a mapping",
    "missing-field": "a required field is missing",
    "unknown-field": "a field that the policy language does not define",
    "invalid-value": "a field has a value of the wrong kind or out of range",
    "duplicate-policy": "two files declare the same policy id",
    "duplicate-rule": "two rules of one policy share an id",
    "expr-syntax": "an expression does not parse",
    "unknown-name": "an expression names a list, macro, step or root that does not exist",
    "unknown-function": "an expression calls a function the language does not have",
    "type-mismatch": "an operator or function is applied to values of the wrong type",
    "bad-regex": "a regular expression does not compile",
    "macro-cycle": "macros refer to each other in a cycle",
    "fact-cycle": "derived facts feed back into the rules that derive them",
    "mixed-item": "one condition refers to both event.* and fact.*",
    "limit": "a policy exceeds a fixed limit of the engine",
    "unsafe-file": "a file in the policy directory is a symbolic link or lies outside it, and is not read",
    "sensitive-read": "a warning: a rule renders a sensitive field into a key, subject, message or fact (masked there)",
    "disabled-rule": "a warning: a policy test names a rule with `enabled: false`, which never fires",
}


@dataclass(frozen=True, order=True)
class Span:
    """A 1-based line and column in a policy file."""

    line: int
    col: int

    def shifted(self, offset: int) -> Span:
        """The span `offset` characters to the right on the same line."""
        return Span(self.line, self.col + offset)


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a policy file."""

    path: str
    span: Span
    code: str
    message: str
    hint: str = ""
    severity: str = "error"
    source_line: str = field(default="", compare=False)

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        """Diagnostics are reported sorted by file, then position."""
        return (self.path, self.span.line, self.span.col, self.code)

    def render_short(self) -> str:
        """`path:line:col: error[code]: message`."""
        return f"{self.path}:{self.span.line}:{self.span.col}: {self.severity}[{self.code}]: {self.message}"

    def render(self) -> str:
        """The short form, then the source line with a caret under the column, then the hint."""
        out = [self.render_short()]
        if self.source_line:
            gutter = f"{self.span.line:>4} | "
            out.append(gutter + self.source_line.rstrip("\n"))
            out.append(" " * (len(gutter) + max(self.span.col - 1, 0)) + "^")
        if self.hint:
            out.append(f"     = help: {self.hint}")
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        """The diagnostic as a JSON object for editors and CI."""
        return {
            "path": self.path,
            "line": self.span.line,
            "col": self.span.col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }
