"""The JSON-with-comments editor (wsruntime_ext/settings/jsonc.py): parsing, and edits that touch only what changed."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from wsruntime_ext.settings.jsonc import JsoncError, edit, parse

COMMENTED = """// leading comment
{
  /* block { with braces } and "quotes" */
  "url": "http://example.com/a//b", // a // inside a string is no comment
  "list": [1, 2, 3,], // trailing comma
  "nested": {
    "keep": true,
    "drop": null, /* gone */
    "change": "old"
  },
  "last": "x", // after the last member
}
"""


def test_parse_comments_trailing_commas_and_strings() -> None:
    assert parse(COMMENTED) == {
        "url": "http://example.com/a//b",
        "list": [1, 2, 3],
        "nested": {"keep": True, "drop": None, "change": "old"},
        "last": "x",
    }
    assert parse('"just a string"') == "just a string"
    assert parse("[1, /* c */ 2]") == [1, 2]


@pytest.mark.parametrize(
    "text",
    ["{", '{"a": 1', '{"a" 1}', '{"a": 1 "b": 2}', "{/* open", '{"a": tru}', "{} x", "{a: 1}", ""],
)
def test_bad_text_is_an_error_with_a_position(text: str) -> None:
    with pytest.raises(JsoncError) as failed:
        parse(text)
    assert failed.value.lineno >= 1 and failed.value.colno >= 1


def test_an_edit_changes_only_the_members_that_differ() -> None:
    data = parse(COMMENTED)
    data["nested"]["change"] = "new"
    del data["nested"]["drop"]
    data["added"] = {"k": [1, 2]}
    out = edit(COMMENTED, data)
    assert parse(out) == data
    for kept in (
        "// leading comment",
        '/* block { with braces } and "quotes" */',
        '"url": "http://example.com/a//b", // a // inside a string is no comment',
        '"list": [1, 2, 3,], // trailing comma',
        '"keep": true,',
        '"change": "new"',
        '"last": "x", // after the last member',
    ):
        assert kept in out, kept
    assert '"drop"' not in out
    assert out.index('"last"') < out.index('"added"')


def test_no_change_is_no_edit_and_empty_documents() -> None:
    assert edit(COMMENTED, parse(COMMENTED)) == COMMENTED
    assert json.loads(edit("", {"a": 1})) == {"a": 1}
    assert parse(edit("{}", {"a": {"b": 1}})) == {"a": {"b": 1}}
    assert parse(edit('{"a": 1, "b": 2}', {})) == {}
    assert edit('{"a": 1, "b": 2}', {"b": 2}) == '{"b": 2}'
    assert edit('{"a": 1, "b": 2}', {"a": 1}) == '{"a": 1}'


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(6 if depth < 3 else 4)
    if kind == 0:
        return rng.randrange(-5, 100)
    if kind == 1:
        return rng.choice(["x", "a // b", "/* no */", 'q"uote', "ünï", ""])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.random()
    if kind == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {f"k{rng.randrange(6)}": _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _commented(value: Any, rng: random.Random, indent: str = "") -> str:
    """``value`` as JSONC with comments and trailing commas sprinkled in."""
    if isinstance(value, dict) and value:
        inner = indent + "  "
        parts = []
        for key, item in value.items():
            comment = rng.choice(["", f"// {key}\n{inner}", "/* c */ "])
            parts.append(f"{inner}{comment}{json.dumps(key)}: {_commented(item, rng, inner)}")
        trailing = "," if rng.random() < 0.3 else ""
        end = rng.choice([" // end\n" + indent, "\n" + indent, ""])  # "}" on its own line, or right after
        return "{\n" + ",\n".join(parts) + trailing + end + "}"
    return json.dumps(value, ensure_ascii=False)


def _mutate(value: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        roll = rng.random()
        if roll < 0.2:
            continue  # removed
        if roll < 0.4:
            out[key] = _random_value(rng, 1)
        elif isinstance(item, dict) and roll < 0.7:
            out[key] = _mutate(item, rng)
        else:
            out[key] = item
    for _ in range(rng.randrange(3)):
        out[f"new{rng.randrange(100)}"] = _random_value(rng, 1)
    return out


@pytest.mark.parametrize("seed", range(500))
def test_random_documents_and_edits_round_trip(seed: int) -> None:
    rng = random.Random(seed)
    original = {f"k{i}": _random_value(rng, 0) for i in range(rng.randrange(1, 6))}
    text = _commented(original, rng)
    assert parse(text) == original
    changed = _mutate(original, rng)
    out = edit(text, changed)
    assert parse(out) == changed, (text, out)
    # Untouched top-level members keep their exact text.
    for key in original:
        if key in changed and changed[key] == original[key]:
            assert json.dumps(key) in out
