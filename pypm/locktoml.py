"""Reading the TOML that pypm's own lock writer emits, fast; anything else goes to tomllib.

Why by hand: every command that reads the lock (sync, run's slow path, export, verify) parsed it
with tomllib, pure Python character by character: 33 ms for the web stack's 0.5 MB lock, on the
critical path of a cold sync before its first download. `lockfile.dumps` writes one fixed layout
-- `key = value` lines, `[[package]]` and `[package.x]` headers, one-line inline tables, arrays of
them one element per line -- and writes every string as a JSON string, which is also a TOML basic
string. So each value is JSON once its inline-table keys are quoted, and the C JSON decoder reads
it: ~5 ms for the same lock.

`loads` returns exactly what `tomllib.loads` returns for that layout, and raises `Unsupported`
for anything it does not recognise as such -- another layout, comments after values, dotted or
quoted keys, literal or multi-line strings, dates, escapes or numbers JSON reads differently
from TOML, a key or table defined twice, an unknown inline-table key -- and the caller then uses
tomllib, which reads (or rejects, with its message) every TOML document. A test checks that
both agree on locks the writer makes and that odd documents are passed on, never misread.

Quoting keys inside a value cannot change a string: a quote inserted inside one ends it early,
and what follows (a key's letters, or `:`) is never valid JSON there, so the value is passed on.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["loads", "Unsupported"]


class Unsupported(ValueError):
    """Not in the layout this reader knows: parse the text with tomllib instead."""


# Inline-table keys lockfile.dumps writes (LockedPackage.to_toml, FileEntry.to_toml, sources).
_KEYS = ("name", "version", "extras", "marker", "filename", "url", "sha256", "size", "registry", "virtual",
         "editable", "directory", "path", "find-links")
_KEY_SET = frozenset(_KEYS)
_ALT = "|".join(re.escape(k) for k in _KEYS)
# `{ name = ` -> `{ "name = ` and `, url = ` -> `, "url = `, over the whole text in two C passes
# (a replacement with a group reference runs Python code per match: 30k of them in that lock);
# each value's ` = ` then becomes `": `.
_OPEN_BRACE = re.compile(r"\{ (?=(?:" + _ALT + r") = )")
_OPEN_COMMA = re.compile(r", (?=(?:" + _ALT + r") = )")
# A known key already in quotes (`{ "name = `): TOML refuses it, but quoting would make it JSON.
_QUOTED = re.compile(r'"(?:' + _ALT + r") = ")
_HEADER = re.compile(r"(\[\[?)([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)(\]\]?)")
_KEY_LINE = re.compile(r"([A-Za-z0-9_-]+) = (.*)")
# Read differently by JSON and TOML: JSON's `\/` escape and lone surrogates (TOML has neither),
# a raw DEL, tab or carriage return (TOML refuses DEL and a lone CR, JSON a tab in a string and
# takes CR as white space anywhere). The writer writes none of them.
# (Substring tests: a regex alternation without a literal prefix took 3 ms over this lock.)
_ODD = ("\\/", "\x7f", "\t", "\r")
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _constant(name: str) -> Any:
    raise Unsupported(f"{name} is not TOML")  # JSON's NaN and Infinity


def loads(text: str) -> dict[str, Any]:
    """The document as tomllib.loads gives it, or Unsupported (see above)."""
    if any(c in text for c in _ODD) or ("\\u" in text and _SURROGATE.search(text)) or _QUOTED.search(text):
        raise Unsupported("an escape or character JSON and TOML read differently, or a quoted key")
    text = _OPEN_COMMA.sub(', "', _OPEN_BRACE.sub('{ "', text))
    keys = [0]  # inline-table keys decoded so far

    def inline_table(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(pairs)
        if len(d) != len(pairs) or not d.keys() <= _KEY_SET:
            raise Unsupported("an inline table with a key twice, or a key the writer does not write")
        keys[0] += len(pairs)
        return d

    decode = json.JSONDecoder(object_pairs_hook=inline_table, parse_constant=_constant).decode
    root: dict[str, Any] = {}
    tables = {id(root)}  # tables and arrays of tables made by headers: the only ones headers extend
    table = root
    lines = text.split("\n")
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        i += 1
        if not line or line[0] == "#":
            continue
        if line[0] == "[":
            m = _HEADER.fullmatch(line)
            if m is None or len(m.group(1)) != len(m.group(3)):
                raise Unsupported(f"a header: {line[:60]}")
            *path, last = m.group(2).split(".")
            t = root
            for k in path:
                if k not in t:
                    t[k] = {}
                    tables.add(id(t[k]))
                t = t[k]
                if id(t) not in tables:
                    raise Unsupported(f"a header into a value: {line[:60]}")
                if isinstance(t, list):
                    t = t[-1]
            if m.group(1) == "[[":
                arr = t.get(last)
                if arr is None:
                    arr = t[last] = []
                    tables.add(id(arr))
                elif id(arr) not in tables or not isinstance(arr, list):
                    raise Unsupported(f"an array of tables over a value: {line[:60]}")
                table = {}
                arr.append(table)
            else:
                if last in t:
                    raise Unsupported(f"a table defined twice: {line[:60]}")
                table = t[last] = {}
            tables.add(id(table))
            continue
        m = _KEY_LINE.fullmatch(line)
        if m is None:
            raise Unsupported(f"a line: {line[:60]}")
        key, value = m.groups()
        elements = -1
        if value == "[":  # an array one element per line, each with its comma, then "]"
            j = i
            while j < n and lines[j] != "]":
                j += 1
            if j == n:
                raise Unsupported("an unterminated array")
            # Joined with their newlines: JSON refuses one inside a string, as TOML does.
            body = "\n".join(lines[i:j])
            elements = j - i
            i = j + 1
            if body:
                if body[-1] != ",":
                    raise Unsupported("an array element without its comma")
                body = body[:-1]
            value = "[" + body + "]"
        if key in table:
            raise Unsupported(f"the key {key!r} given twice")
        before = keys[0]
        try:
            table[key] = v = decode(value.replace(" = ", '": '))
        except Unsupported:
            raise
        except ValueError:
            raise Unsupported(f"a value: {value[:60]}") from None
        # Every ` = ` was a key's (one ` = ` too many, as in `a =  = 1`, can make JSON of
        # what TOML refuses), and every element had a line of its own (an inline table split
        # over two lines is JSON, not TOML).
        if keys[0] - before != value.count(" = ") or (elements >= 0 and len(v) != elements):
            raise Unsupported(f"not the writer's layout: {value[:60]}")
    return root
