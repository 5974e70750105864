"""Stage parse (YAML): policy file text -> plain values plus the line:col of every key and value.

Only the YAML core schema is accepted: tags (`!!python/object`), anchors and aliases (billion laughs)
are refused, so loading a policy can neither run code nor blow up in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from tosengine.errors import TosEngineError
from tosengine.policy.diagnostics import Span

__all__ = ["Located", "YamlError", "load_yaml"]

MAX_BYTES = 1 << 20
_DEFAULT_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}

Key = tuple[str | int, ...]


class YamlError(TosEngineError):
    """The text is not acceptable YAML; `code` is a diagnostic code."""

    def __init__(self, code: str, message: str, span: Span) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.span = span


@dataclass
class Located:
    """A loaded document: `value`, and spans by path of keys (`("rules", 0, "match")`)."""

    value: Any
    spans: dict[Key, Span] = field(default_factory=dict)
    key_spans: dict[Key, Span] = field(default_factory=dict)

    def span(self, path: Key) -> Span:
        """The span of the value at `path`, or of the nearest enclosing value that has one."""
        while path not in self.spans and path:
            path = path[:-1]
        return self.spans.get(path, Span(1, 1))

    def key_span(self, path: Key) -> Span:
        """The span of the key that names `path` (falls back to the value's span)."""
        return self.key_spans.get(path) or self.span(path)


def _value_span(node: yaml.Node) -> Span:
    mark = node.start_mark
    span = Span(mark.line + 1, mark.column + 1)
    style = getattr(node, "style", None)
    if style in ('"', "'"):
        return span.shifted(1)  # the expression starts after the quote
    if style in ("|", ">"):
        # Block scalars start on the next line; its indentation is the node's column + 2 by convention.
        return Span(span.line + 1, mark.column + 3)
    return span


def _convert(node: yaml.Node, path: Key, out: Located) -> Any:
    if node.tag not in _DEFAULT_TAGS:
        raise YamlError("yaml-unsafe", f"YAML tag {node.tag} is not allowed in policy files", _value_span(node))
    out.spans[path] = _value_span(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                raise YamlError("not-a-mapping", "mapping keys must be plain strings", _value_span(knode))
            key = str(yaml.SafeLoader.construct_scalar(yaml.SafeLoader(""), knode))
            if key in result:
                raise YamlError("invalid-value", f"key `{key}` appears twice", _value_span(knode))
            out.key_spans[(*path, key)] = _value_span(knode)
            result[key] = _convert(vnode, (*path, key), out)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, (*path, i), out) for i, v in enumerate(node.value)]
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


class _NoAliasComposer(yaml.SafeLoader):
    """A safe composer that refuses anchors and aliases before anything is expanded."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()  # type: ignore[no-untyped-call]
            raise YamlError(
                "yaml-unsafe",
                "YAML aliases (*name) are not allowed in policy files",
                Span(ev.start_mark.line + 1, ev.start_mark.column + 1),
            )
        ev = self.peek_event()  # type: ignore[no-untyped-call]
        if getattr(ev, "anchor", None):
            raise YamlError(
                "yaml-unsafe",
                "YAML anchors (&name) are not allowed in policy files",
                Span(ev.start_mark.line + 1, ev.start_mark.column + 1),
            )
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Located:
    """Load one YAML document safely, keeping spans; raise YamlError."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlError("limit", f"policy file larger than {MAX_BYTES} bytes", Span(1, 1))
    loader = _NoAliasComposer(text)
    try:
        node = loader.get_single_node()
    except YamlError:
        raise
    except yaml.MarkedYAMLError as exc:
        # Point at where the broken construct starts (an unclosed quote, say), not where YAML gave up.
        mark = exc.context_mark or exc.problem_mark
        span = Span(mark.line + 1, mark.column + 1) if mark else Span(1, 1)
        what = f"{exc.context}: {exc.problem}" if exc.context and exc.problem else (exc.problem or exc.context)
        raise YamlError("yaml-syntax", str(what), span) from None
    except yaml.YAMLError as exc:
        raise YamlError("yaml-syntax", str(exc), Span(1, 1)) from None
    except RecursionError:
        raise YamlError("limit", "the file nests lists or mappings too deeply", Span(1, 1)) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python reads
        raise YamlError("limit", f"a value cannot be read: {exc}", Span(1, 1)) from None
    finally:
        loader.dispose()
    out = Located(None)
    if node is None:
        return out
    try:
        out.value = _convert(node, (), out)
    except RecursionError:
        raise YamlError("limit", "the file nests lists or mappings too deeply", Span(1, 1)) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python reads
        raise YamlError("limit", f"a value cannot be read: {exc}", _value_span(node)) from None
    return out
