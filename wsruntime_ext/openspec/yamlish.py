"""A YAML reader for exactly the subset OpenSpec writes and reads (``config.yaml``, ``.openspec.yaml``,
``schema.yaml``), with the YAML 1.2 core semantics of the npm ``yaml`` package the CLI uses.

Block mappings and sequences (a sequence item may open a mapping: ``- id: x``),
flow sequences and mappings on one or more lines, plain, single- and double-quoted
scalars, ``|``/``>`` block scalars with chomping indicators, comments. Plain
scalars resolve as YAML 1.2 core: ``null``/``~``, ``true``/``false``, integers and
floats; **a date such as ``2026-11-28`` stays a string** (PyYAML would make it a
``date``). Anything else — anchors, tags, tabs as indentation, duplicate keys —
raises :class:`YamlError`, which callers treat as "unparseable", as the CLI does.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["YamlError", "parse"]


class YamlError(ValueError):
    """The text is not YAML this reader understands (the CLI would reject it, or it is out of scope)."""


_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_KEY = re.compile(
    r"""^(?:"((?:[^"\\]|\\.)*)"|'((?:[^']|'')*)'|([^\s#'"\[\]{},&*!|>%@`-][^#]*?|-[^\s#][^#]*?))\s*:(?:\s+|$)"""
)
_BLOCK_HEADER = re.compile(r"^([|>])([-+]?)([1-9]?)([-+]?)\s*(?:#.*)?$")


def parse(text: str) -> Any:
    """The document's value (``None`` for an empty document)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line in lines:
        if line.startswith("%") or line.strip() in ("...",):
            raise YamlError("directives and document markers are not supported")
    if lines and lines[0].strip() == "---":
        lines = lines[1:]
    if any(line.strip() == "---" for line in lines):
        raise YamlError("more than one document")
    reader = _Reader(lines)
    i = reader.skip(0)
    if i >= len(lines):
        return None
    value, i = reader.block(i, reader.indent(i))
    i = reader.skip(i)
    if i < len(lines):
        raise YamlError(f"unexpected content on line {i + 1}")
    return value


def _is_blank(line: str) -> bool:
    stripped = line.strip()
    return stripped == "" or stripped.startswith("#")


def _strip_comment(text: str) -> str:
    """A plain value without its trailing `` # comment``."""
    match = re.search(r"(^|\s)#", text)
    if match:
        text = text[: match.start()]
    return text.strip()


def resolve_plain(text: str) -> Any:
    """YAML 1.2 core schema resolution of a plain scalar."""
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _OCT.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"):
        return float("inf")
    if text in ("-.inf", "-.Inf", "-.INF"):
        return float("-inf")
    if text in (".nan", ".NaN", ".NAN"):
        return float("nan")
    if text[0] in "&*!%@`":
        raise YamlError(f"unsupported YAML syntax: {text[:40]!r}")
    return text


_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}


def _double_quoted(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= len(body):
            raise YamlError("a double-quoted string ends in a backslash")
        e = body[i + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = body[i + 2 : i + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise YamlError("bad escape in a double-quoted string")
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            raise YamlError(f"unknown escape \\{e}")
    return "".join(out)


def _fold_quoted(parts: list[str]) -> str:
    """Multi-line quoted scalars: line breaks fold to spaces, empty lines to newlines."""
    if len(parts) == 1:
        return parts[0]
    out = parts[0].rstrip(" \t")
    pending_newlines = 0
    for part in parts[1:-1]:
        if part.strip() == "":
            pending_newlines += 1
            continue
        out += ("\n" * pending_newlines if pending_newlines else " ") + part.strip(" \t")
        pending_newlines = 0
    last = parts[-1].lstrip(" \t")
    out += ("\n" * pending_newlines if pending_newlines else " ") + last
    return out


class _Reader:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def skip(self, i: int) -> int:
        while i < len(self.lines) and _is_blank(self.lines[i]):
            i += 1
        return i

    def indent(self, i: int) -> int:
        line = self.lines[i]
        n = len(line) - len(line.lstrip(" "))
        if line[n : n + 1] == "\t":
            raise YamlError(f"a tab in the indentation of line {i + 1}")
        return n

    def block(self, i: int, indent: int) -> tuple[Any, int]:
        """The block node whose first line is ``i`` at column ``indent``."""
        content = self.lines[i][indent:]
        if content == "-" or content.startswith("- ") or content.startswith("-\t"):
            return self.sequence(i, indent)
        if _KEY.match(content):
            return self.mapping(i, indent)
        value, i = self.inline_value(i, indent, content, indent - 1)
        return value, i

    def sequence(self, i: int, indent: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        while True:
            i = self.skip(i)
            if i >= len(self.lines) or self.indent(i) != indent:
                break
            content = self.lines[i][indent:]
            if not (content == "-" or content.startswith("- ") or content.startswith("-\t")):
                break
            rest = content[1:]
            stripped = rest.lstrip(" ")
            if stripped == "" or stripped.startswith("#"):
                nxt = self.skip(i + 1)
                if nxt < len(self.lines) and self.indent(nxt) > indent:
                    value, i = self.block(nxt, self.indent(nxt))
                else:
                    value, i = None, i + 1
            else:
                column = indent + 1 + (len(rest) - len(stripped))
                # The item's content is a node starting at ``column`` (``- id: x`` opens a mapping there).
                self.lines[i] = " " * column + stripped
                value, i = self.block(i, column)
            items.append(value)
        return items, i

    def mapping(self, i: int, indent: int) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        while True:
            i = self.skip(i)
            if i >= len(self.lines) or self.indent(i) != indent:
                break
            content = self.lines[i][indent:]
            match = _KEY.match(content)
            if not match:
                if content.startswith("- ") or content == "-":
                    break
                raise YamlError(f"expected 'key: value' on line {i + 1}")
            if match.group(1) is not None:
                key = _double_quoted(match.group(1))
            elif match.group(2) is not None:
                key = match.group(2).replace("''", "'")
            else:
                key = match.group(3).strip()
            if key in result:
                raise YamlError(f"duplicate key {key!r} on line {i + 1}")
            rest = content[match.end() :]
            if rest.strip() == "" or rest.strip().startswith("#"):
                nxt = self.skip(i + 1)
                if nxt < len(self.lines) and (
                    self.indent(nxt) > indent
                    or (self.indent(nxt) == indent and self.lines[nxt][indent:].startswith("-"))
                ):
                    value, i = self.block(nxt, self.indent(nxt))
                else:
                    value, i = None, i + 1
            else:
                value, i = self.inline_value(
                    i, indent + match.end() + (len(rest) - len(rest.lstrip())), rest.strip(), indent
                )
            result[key] = value
        return result, i

    def inline_value(self, i: int, column: int, text: str, parent_indent: int) -> tuple[Any, int]:
        """A value that starts on line ``i`` (after ``key:`` or ``-``): scalar, flow or block scalar."""
        header = _BLOCK_HEADER.match(text)
        if header:
            return self.block_scalar(i, parent_indent, header)
        if text[0] in "[{":
            return self.flow(i, column)
        if text[0] in "\"'":
            return self.quoted(i, column)
        value = _strip_comment(text)
        parts = [value]
        j = i + 1
        # A plain scalar may continue on more-indented lines (folded with spaces).
        while j < len(self.lines):
            line = self.lines[j]
            if line.strip() == "":
                j += 1
                continue
            if self.indent(j) <= parent_indent or line.strip().startswith("#"):
                break
            if _KEY.match(line.strip()) or line.strip().startswith("- "):
                raise YamlError(f"unexpected mapping or sequence on line {j + 1}")
            parts.append(_strip_comment(line.strip()))
            j += 1
        if len(parts) > 1:
            return " ".join(parts), j
        return resolve_plain(value), i + 1

    def quoted(self, i: int, column: int) -> tuple[str, int]:
        text = "\n".join(self.lines[i:])[column:]
        quote = text[0]
        if quote == "'":
            match = re.match(r"'((?:[^']|'')*)'", text, re.S)
        else:
            match = re.match(r'"((?:[^"\\]|\\.)*)"', text, re.S)
        if not match:
            raise YamlError(f"unterminated quoted string on line {i + 1}")
        body = match.group(1)
        after = text[match.end() :].split("\n", 1)[0]
        if _strip_comment(after) != "":
            raise YamlError(f"unexpected text after a quoted string on line {i + 1}")
        lines_used = body.count("\n")
        parts = body.split("\n")
        if quote == "'":
            value = _fold_quoted(parts).replace("''", "'")
        else:
            value = _double_quoted(_fold_quoted(parts))
        return value, i + lines_used + 1

    def flow(self, i: int, column: int) -> tuple[Any, int]:
        text = "\n".join(self.lines[i:])[column:]
        parser = _Flow(text)
        value = parser.value()
        rest = text[parser.pos :].split("\n", 1)[0]
        if _strip_comment(rest) != "":
            raise YamlError(f"unexpected text after a flow collection on line {i + 1}")
        return value, i + text[: parser.pos].count("\n") + 1

    def block_scalar(self, i: int, parent_indent: int, header: re.Match[str]) -> tuple[str, int]:
        style = header.group(1)
        chomp = header.group(2) or header.group(4)
        explicit = header.group(3)
        j = i + 1
        body: list[str] = []
        block_indent = parent_indent + int(explicit) + 1 if explicit else None
        while j < len(self.lines):
            line = self.lines[j]
            if line.strip() == "":
                body.append(line)
                j += 1
                continue
            n = len(line) - len(line.lstrip(" "))
            if block_indent is None:
                if n <= parent_indent:
                    break
                block_indent = n
            if n < block_indent:
                break
            body.append(line)
            j += 1
        if block_indent is None:
            block_indent = parent_indent + 1
        # Trailing blank lines belong to the chomping, not the content.
        while body and body[-1].strip() == "":
            body.pop()
            j -= 1
        trailing = 0
        k = j
        while k < len(self.lines) and self.lines[k].strip() == "":
            trailing += 1
            k += 1
        content = [line[block_indent:] for line in body]
        if style == "|":
            text = "\n".join(content)
        else:
            text = _fold_block(content)
        if not content:
            text = ""
        if chomp == "-":
            value = text
        elif chomp == "+":
            value = text + "\n" * (1 + trailing) if content else "\n" * trailing
        else:
            value = text + "\n" if content else ""
        return value, k if chomp == "+" else j


def _fold_block(lines: list[str]) -> str:
    out = ""
    previous_more_indented = True
    empty_run = 0
    for index, line in enumerate(lines):
        if line == "" or (line.strip() == "" and not line.startswith(" ")):
            empty_run += 1
            continue
        more_indented = line.startswith(" ") or line.startswith("\t")
        if index == 0 or (out == "" and empty_run == 0):
            out += "\n" * empty_run + line
        elif more_indented or previous_more_indented:
            out += "\n" * (empty_run + 1) + line
        else:
            out += ("\n" * empty_run if empty_run else " ") + line
        empty_run = 0
        previous_more_indented = more_indented
    return out


class _Flow:
    """``[a, b]`` and ``{k: v}`` collections (possibly over several lines)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def ws(self) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in " \t\n":
                self.pos += 1
            elif c == "#" and (self.pos == 0 or self.text[self.pos - 1] in " \t\n"):
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.pos += 1
            else:
                break

    def value(self) -> Any:
        self.ws()
        if self.pos >= len(self.text):
            raise YamlError("unterminated flow collection")
        c = self.text[self.pos]
        if c == "[":
            return self.seq()
        if c == "{":
            return self.map()
        return self.scalar()

    def seq(self) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        while True:
            self.ws()
            if self.pos >= len(self.text):
                raise YamlError("unterminated flow sequence")
            if self.text[self.pos] == "]":
                self.pos += 1
                return items
            items.append(self.value())
            self.ws()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
            elif self.pos < len(self.text) and self.text[self.pos] == "]":
                continue
            else:
                raise YamlError("expected ',' or ']' in a flow sequence")

    def map(self) -> dict[str, Any]:
        self.pos += 1
        result: dict[str, Any] = {}
        while True:
            self.ws()
            if self.pos >= len(self.text):
                raise YamlError("unterminated flow mapping")
            if self.text[self.pos] == "}":
                self.pos += 1
                return result
            key = self.scalar(in_key=True)
            self.ws()
            value: Any = None
            if self.pos < len(self.text) and self.text[self.pos] == ":":
                self.pos += 1
                value = self.value()
            if not isinstance(key, str):
                key = str(key).lower() if isinstance(key, bool) else str(key)
            if key in result:
                raise YamlError(f"duplicate key {key!r}")
            result[key] = value
            self.ws()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
            elif self.pos < len(self.text) and self.text[self.pos] == "}":
                continue
            else:
                raise YamlError("expected ',' or '}' in a flow mapping")

    def scalar(self, in_key: bool = False) -> Any:
        text = self.text
        c = text[self.pos]
        if c == '"':
            match = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S).match(text, self.pos)
            if not match:
                raise YamlError("unterminated quoted string")
            self.pos = match.end()
            return _double_quoted(_fold_quoted(match.group(1).split("\n")))
        if c == "'":
            match = re.compile(r"'((?:[^']|'')*)'", re.S).match(text, self.pos)
            if not match:
                raise YamlError("unterminated quoted string")
            self.pos = match.end()
            return _fold_quoted(match.group(1).split("\n")).replace("''", "'")
        start = self.pos
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in ",[]{}\n":
                break
            if ch == ":" and (self.pos + 1 >= len(text) or text[self.pos + 1] in " \t\n,[]{}"):
                break
            if ch == "#" and self.pos > start and text[self.pos - 1] in " \t":
                break
            self.pos += 1
        raw = text[start : self.pos].strip()
        if raw == "" and not in_key:
            return None
        return resolve_plain(raw) if raw else ""
