"""JSON with comments (JSONC): read it, and change only the keys that changed, in the text itself.

Gemini CLI, Qwen Code and opencode read their settings as JSON with ``//`` and
``/* */`` comments (opencode also takes trailing commas). :func:`parse` turns
such a text into Python values; :func:`edit` rewrites the text so that it holds
a new value while every comment, every untouched key and its formatting stay
where they were: objects are compared key by key, an unchanged member keeps its
bytes, a changed one gets only its value replaced, a removed one is cut out
with its comma, a new one is added before the object's closing brace.
"""

from __future__ import annotations

import json
from typing import Any

_WS = " \t\r\n\ufeff"


class JsoncError(ValueError):
    """Text that is not JSON with comments; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, text: str, pos: int) -> None:
        self.msg = message
        self.lineno = text.count("\n", 0, pos) + 1
        self.colno = pos - (text.rfind("\n", 0, pos) + 1) + 1
        super().__init__(f"{message} (line {self.lineno}, column {self.colno})")


class _Node:
    """A parsed value and where its text is: ``text[start:end]``; objects keep their members in order."""

    __slots__ = ("end", "members", "start", "value")

    def __init__(self, start: int) -> None:
        self.start = start
        self.end = start
        self.value: Any = None
        # key → (member start: the key's quote, value node, end of member: after a comma if any)
        self.members: list[tuple[str, int, _Node]] | None = None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> JsoncError:
        return JsoncError(message, self.text, self.pos)

    def skip(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in _WS:
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.fail("Unterminated comment")
                self.pos = end + 2
            else:
                return

    def value(self, depth: int = 0) -> _Node:
        if depth > 200:
            raise self.fail("Nested too deeply")
        self.skip()
        node = _Node(self.pos)
        if self.pos >= len(self.text):
            raise self.fail("Expecting value")
        c = self.text[self.pos]
        if c == "{":
            self._object(node, depth)
        elif c == "[":
            self._array(node, depth)
        elif c == '"':
            node.value = self._string()
        else:
            try:
                node.value, self.pos = _SCANNER(self.text, self.pos)
            except StopIteration:
                raise self.fail("Expecting value") from None
            if isinstance(node.value, (dict, list, str)):
                raise self.fail("Expecting value")
        node.end = self.pos
        return node

    def _string(self) -> str:
        try:
            value, self.pos = json.decoder.scanstring(self.text, self.pos + 1)  # type: ignore[attr-defined]
        except json.JSONDecodeError as exc:
            self.pos = exc.pos
            raise self.fail(exc.msg) from None
        return value  # type: ignore[no-any-return]

    def _object(self, node: _Node, depth: int) -> None:
        self.pos += 1
        node.members = []
        value: dict[str, Any] = {}
        while True:
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                self.pos += 1
                break
            if self.pos >= len(self.text) or self.text[self.pos] != '"':
                raise self.fail("Expecting property name enclosed in double quotes")
            key_start = self.pos
            key = self._string()
            self.skip()
            if self.pos >= len(self.text) or self.text[self.pos] != ":":
                raise self.fail("Expecting ':' delimiter")
            self.pos += 1
            child = self.value(depth + 1)
            node.members.append((key, key_start, child))
            value[key] = child.value
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "}":
                self.pos += 1
                break
            raise self.fail("Expecting ',' delimiter")
        node.value = value

    def _array(self, node: _Node, depth: int) -> None:
        self.pos += 1
        items: list[Any] = []
        while True:
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                self.pos += 1
                break
            items.append(self.value(depth + 1).value)
            self.skip()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                self.pos += 1
                break
            raise self.fail("Expecting ',' delimiter")
        node.value = items


_SCANNER = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]


def _parse_node(text: str) -> _Node:
    parser = _Parser(text)
    node = parser.value()
    parser.skip()
    if parser.pos != len(text):
        raise parser.fail("Extra data")
    return node


def parse(text: str) -> Any:
    """The value of a JSONC text (comments and trailing commas allowed); :class:`JsoncError` if it is not one."""
    return _parse_node(text).value


def edit(text: str, new: dict[str, Any]) -> str:
    """``text`` (a JSONC object) changed to hold ``new``, touching only the members that differ.

    Two passes: removals and replaced values first, then (on the text they leave) the new members, so
    that an insertion never lands in a span that a removal cuts.
    """
    if not text.strip():
        return json.dumps(new, indent=2, ensure_ascii=False) + "\n"
    for adding in (False, True):
        root = _parse_node(text)
        if root.members is None:
            return json.dumps(new, indent=2, ensure_ascii=False) + "\n"
        edits: list[tuple[int, int, str]] = []
        _diff(text, root, new, edits, adding)
        for start, end, replacement in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
            text = text[:start] + replacement + text[end:]
    return text


def _line_indent(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    end = line_start
    while end < len(text) and text[end] in " \t":
        end += 1
    return text[line_start:end]


def _render(value: Any, indent: str) -> str:
    """``value`` as JSON indented by two spaces, its later lines starting at ``indent``."""
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)


def _diff(text: str, node: _Node, new: dict[str, Any], edits: list[tuple[int, int, str]], adding: bool) -> None:
    """The edits that turn ``node`` into ``new``: removals and replacements, or (``adding``) new members."""
    assert node.members is not None
    for i, (key, start, child) in enumerate(node.members):
        if key not in new:
            if not adding:
                edits.extend(_removal(text, node, i, new))
        elif child.members is not None and isinstance(new[key], dict):
            _diff(text, child, new[key], edits, adding)
        elif not adding and (child.value != new[key] or type(child.value) is not type(new[key])):
            edits.append((child.start, child.end, _render(new[key], _line_indent(text, start))))
    added = [key for key in new if key not in {m[0] for m in node.members}]
    if not adding or not added:
        return
    indent = _line_indent(text, node.members[0][1]) if node.members else _line_indent(text, node.start) + "  "
    body = "".join(f",\n{indent}{json.dumps(k, ensure_ascii=False)}: {_render(new[k], indent)}" for k in added)
    if not node.members:
        close = node.end - 1
        edits.append((close, close, body[1:] + "\n" + _line_indent(text, node.start)))
        return
    after = node.members[-1][2].end
    probe = _Parser(text)
    probe.pos = after
    probe.skip()
    if text[probe.pos] == ",":  # a trailing comma already there (JSONC): the new members go after it
        after = probe.pos + 1
        body = body[1:]
    rest = text[after:].split("\n", 1)[0]
    if rest.strip().startswith("//"):  # the last member's own line comment stays on its line
        if body.startswith(","):
            edits.append((after, after, ","))
            body = body[1:]
        after += len(rest)
    edits.append((after, after, body))


def _removal(text: str, node: _Node, index: int, new: dict[str, Any]) -> list[tuple[int, int, str]]:
    """The edits that remove member ``index`` of ``node``: the member (its whole line when it has one) and
    the comma that separated it — its own, or for the last member the one after the member kept before it."""
    assert node.members is not None
    _key, start, child = node.members[index]
    line_start = text.rfind("\n", 0, start) + 1
    own_line = not text[line_start:start].strip()
    probe = _Parser(text)
    probe.pos = child.end
    probe.skip()
    if text[probe.pos] == ",":  # its own comma goes with it
        end = probe.pos + 1
        while end < len(text) and text[end] in " \t":
            end += 1
        if own_line:
            start = line_start
            if end < len(text) and text[end] == "\n":
                end += 1
        return [(start, end, "")]
    # The last member: cut it, and the comma after the nearest member that stays. On a line of its own, the
    # line goes (a line comment before it must not swallow the closing brace); else the space before it.
    end = child.end
    if own_line:
        start = line_start
        while end < len(text) and text[end] in " \t":
            end += 1
        if end < len(text) and text[end] == "\n":
            end += 1
    elif node.members[index - 1][0] in new if index > 0 else False:
        while text[start - 1] in " \t":
            start -= 1
    edits = [(start, end, "")]
    kept = [m for m in node.members[:index] if m[0] in new]
    if kept:
        comma = _Parser(text)
        comma.pos = kept[-1][2].end
        comma.skip()
        edits.append((comma.pos, comma.pos + 1, ""))
    return edits
