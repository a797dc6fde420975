"""Globs as regular expressions over ``/``-separated workspace-relative paths.

One translator for every place that takes a glob: file search (``?glob=``,
ripgrep's syntax) and the watcher's ``--watch-ignore`` patterns. ``*`` and
``?`` stay within a segment, ``**`` crosses segments, ``[...]`` is a class
(``!`` or ``^`` negates it), ``{a,b}`` alternates and ``\\`` escapes.
"""

from __future__ import annotations

import re


def glob_to_regex(glob: str) -> str:
    """The regular expression source for one glob (not anchored); ValueError when a ``{`` is left open."""
    out: list[str] = []
    i = 0
    n = len(glob)
    depth = 0  # inside {...}
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")  # zero or more whole segments
            i += 3
            continue
        if glob.startswith("/**", i) and i + 3 == n:
            out.append("(?:/.*)?")
            i += 3
            continue
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            first = i + 2 if glob[i + 1 : i + 2] in ("!", "^") else i + 1
            end = glob.find("]", first + 1 if glob[first : first + 1] == "]" else first)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(glob[i]))
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise ValueError("unbalanced { in glob")
    return "".join(out)


def escape_glob(text: str) -> str:
    """``text`` as a glob that matches exactly itself."""
    return re.sub(r"([*?\[\]{},\\])", r"\\\1", text)
