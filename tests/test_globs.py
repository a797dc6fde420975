"""The one glob translator (wsruntime_ext/globs.py) that search and the watcher share."""

from __future__ import annotations

import re

import pytest

from wsruntime_ext.globs import escape_glob, glob_to_regex


def matches(glob: str, path: str) -> bool:
    return re.fullmatch(glob_to_regex(glob), path, re.DOTALL) is not None


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("*.py", "a.py", True),
        ("*.py", "a/b.py", False),
        ("**/*.py", "a/b/c.py", True),
        ("**/*.py", "c.py", True),
        ("src/**", "src/a/b", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[ab].txt", "b.txt", True),
        ("[!ab].txt", "b.txt", False),
        ("[^ab].txt", "c.txt", True),
        ("[]x].txt", "].txt", True),
        ("[!]x].txt", "].txt", False),
        ("*.{js,ts}", "x.ts", True),
        ("*.{js,ts}", "x.py", False),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("[unclosed", "[unclosed", True),
    ],
)
def test_translation(glob: str, path: str, expected: bool) -> None:
    assert matches(glob, path) is expected


def test_open_brace_is_refused() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        glob_to_regex("*.{js,ts")


@pytest.mark.parametrize("text", [".wsruntime", "state[1]", "we*rd?{a,b}\\dir"])
def test_escaped_text_matches_only_itself(text: str) -> None:
    assert matches(escape_glob(text), text)
    assert not matches(escape_glob(text), text + "x")
