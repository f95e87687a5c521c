"""`pypm run --env-file PATH` (and `shell`): environment variables from a dotenv file.

The format is the common subset that docker, uv and python-dotenv read alike: `NAME=VALUE` per
line; blank lines and lines starting with `#` are skipped; `export NAME=VALUE` is accepted; a
value may be quoted, `'...'` as it is, `"..."` with the escapes \\n, \\t, \\", \\\\ and \\$; an
unquoted value ends at ` #` (a comment) and has its outer spaces stripped. No `${VAR}`
interpolation and no value spanning lines: a file that relies on either is refused with its line
named, rather than read differently from the tool that wrote it.

Written here (a few lines) rather than with python-dotenv: pypm needs only the parse, with errors
that name the file and line, and no variable expansion.
"""

from __future__ import annotations

import re

from .errors import ProjectError, UsageError

__all__ = ["read_env_files"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def read_env_files(paths: list[tuple[str, str]], origin: str = "--env-file") -> dict[str, str]:
    """The variables of the files (path on disk, as the user wrote it), later files winning.
    `origin`: where they were named (the flag, or PYPM_ENV_FILE), for the errors."""
    out: dict[str, str] = {}
    for path, given in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            hint = "give the path of a file of NAME=VALUE lines, relative to the current directory"
            if origin != "--env-file":
                hint += f" (or unset {origin}, or pass --no-env-file)"
            raise UsageError(f"{origin} {given}: no such file ({path})", hint=hint) from None
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise UsageError(f"{origin} {given}: cannot read {path}: {why}",
                             hint="it must be a readable UTF-8 text file") from None
        out.update(_parse(text, path))
    return out


def _parse(text: str, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        name, eq, value = line.partition("=")
        name = name.strip()
        where = f"{path}:{lineno}"
        if not eq or not _NAME.match(name):
            raise ProjectError(f"{where}: expected NAME=VALUE, found {raw.strip()!r}",
                               hint="a variable name is letters, digits and _, not starting with a digit")
        out[name] = _value(value.strip(), where)
    return out


def _value(value: str, where: str) -> str:
    if not value or value[0] not in ("'", '"'):
        if " #" in value or "\t#" in value:
            value = re.split(r"[ \t]#", value, maxsplit=1)[0]
        value = value.rstrip()
        if "${" in value:
            raise ProjectError(f"{where}: ${{...}} interpolation is not supported",
                               hint="write the value out, or quote it with '...' to keep it as it is")
        return value
    quote = value[0]
    out: list[str] = []
    i = 1
    while i < len(value):
        c = value[i]
        if c == quote:
            rest = value[i + 1:].strip()
            if rest and not rest.startswith("#"):
                raise ProjectError(f"{where}: text after the closing quote: {rest!r}",
                                   hint="put a comment after ` #`, or the whole value inside the quotes")
            return "".join(out)
        if c == "\\" and quote == '"' and i + 1 < len(value) and value[i + 1] in _ESCAPES:
            out.append(_ESCAPES[value[i + 1]])
            i += 2
            continue
        if c == "$" and quote == '"' and value[i + 1:i + 2] == "{":
            raise ProjectError(f"{where}: ${{...}} interpolation is not supported",
                               hint="write the value out, or quote it with '...' to keep it as it is")
        out.append(c)
        i += 1
    raise ProjectError(f"{where}: the quote {quote} is not closed on its line",
                       hint="values spanning several lines are not supported: write \\n inside \"...\"")
