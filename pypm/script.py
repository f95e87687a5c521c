"""`pypm run script.py`: a script with PEP 723 inline metadata, in an environment of its own, sandboxed.

A script that starts its life with

    # /// script
    # requires-python = ">=3.11"
    # dependencies = ["requests<3", "rich"]
    # ///

runs with exactly those dependencies, whatever project (if any) the current directory is in, as
`uv run script.py` runs it. The environment is made as `pypm x` makes one (pypm.toolrun): a
virtual project in the cache keyed by the dependencies, requires-python, the interpreter and the
index options, locked (every file hash-pinned) and synced from the verified wheel cache the first
time, found current afterwards without the resolver or the network. The script runs in the
sandbox with the current directory as its project (and the script file itself read-only when it
lies elsewhere: not its directory), no network unless --network host.

`[tool.pypm]` in the block may set index-url, extra-index-url and find-links (a relative
find-links path is taken from the script's directory). Anything else there is an error, as in a
pyproject.toml.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from .errors import ProjectError, UsageError

TYPE_CHECKING = False  # (not `from typing import`: typing costs ~2-5 ms on a script's run)
if TYPE_CHECKING:
    import re
    from pathlib import Path
    from typing import Any

__all__ = ["script_metadata", "script_blocks", "block_toml", "parse_metadata", "environment_args", "run_script",
           "META_DIR"]

# A script's run whose environment is current is on the hot path (run.fast_main -> fast_script):
# this module's top imports no re, pathlib or typing, and such a run reads the block from the
# cache (META_DIR) instead of importing tomllib and re to parse it again (~10 ms of ~25).

# PEP 723's reference regular expression (compiled, and cached, by re at its first use)
_BLOCK = r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$"
# The cache's record of scripts' blocks: <sha256 of pypm's version and the file's bytes>.json
# holding {"meta": the block as script_metadata(deep=False) read it, or null for none}.
META_DIR = "script-meta"
_TOOL_KEYS = ("index-url", "extra-index-url", "find-links")


def script_metadata(path: Path | str, *, deep: bool = True) -> dict[str, Any] | None:
    """The script's `script` block as data (validated), or None when it has none. `deep=False`:
    only the structure (keys and types) is checked, not each requirement and specifier, which
    needs packaging (~20 ms of imports); `pypm run` checks them when the environment is made."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ProjectError(f"cannot read {path}: {e.strerror or e}") from None
    return _metadata_of(data, path, deep=deep)


def _metadata_of(data: bytes, path: Path | str, *, deep: bool) -> dict[str, Any] | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProjectError(f"cannot read {path}: {e}") from None
    blocks = script_blocks(text)
    if not blocks:
        return None
    if len(blocks) > 1:
        raise ProjectError(f"{path}: more than one `# /// script` block", hint="PEP 723 allows one; merge them")
    return parse_metadata(block_toml(blocks[0]), path, deep=deep)


def script_blocks(text: str) -> list[re.Match[str]]:
    """The `# /// script` blocks of a script's text (PEP 723 allows at most one)."""
    import re

    return [m for m in re.finditer(_BLOCK, text) if m.group("type") == "script"]


def block_toml(block: re.Match[str]) -> str:
    """A block's TOML: each line without its leading `# ` (or `#`)."""
    return "".join(line[2:] if line.startswith("# ") else line[1:]
                   for line in block.group("content").splitlines(keepends=True))


def parse_metadata(content: str, path: Path | str, *, deep: bool = True) -> dict[str, Any]:
    """A block's TOML as data, validated (see script_metadata); errors name `path` and the key."""
    import tomllib

    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as e:
        raise ProjectError(f"{path}: the `# /// script` block is not valid TOML: {e}",
                           hint="each line of the block is `# ` followed by a line of TOML") from None
    return _checked(data, path, deep=deep)


def _checked(data: dict[str, Any], path: Path | str, *, deep: bool = True) -> dict[str, Any]:
    def bad(key: str, what: str) -> ProjectError:
        return ProjectError(f"{path}: `{key}` in the `# /// script` block {what}")

    unknown = sorted(set(data) - {"dependencies", "requires-python", "tool"})
    if unknown:
        raise bad(unknown[0], "is not a PEP 723 key (dependencies, requires-python, tool)")
    deps = data.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise bad("dependencies", "must be an array of strings")
    rp = data.get("requires-python")
    if rp is not None and not isinstance(rp, str):
        raise bad("requires-python", "must be a string such as \">=3.11\"")
    if deep:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        from .pathdeps import REMOTE

        for d in deps:
            try:
                url = Requirement(d).url
            except InvalidRequirement as e:
                raise bad("dependencies", f"holds {d!r}, not a valid requirement: {e}") from None
            if url and not url.startswith((*REMOTE, "git+")):
                # (A remote wheel or sdist, or a git repository, is locked as a project's is. A
                # file: URL is not: the environment's project lives in the cache, not beside the script.)
                raise bad("dependencies", f"holds {d!r}, a direct URL, which pypm cannot lock yet "
                                          "(name a find-links directory in [tool.pypm] instead)")
        if rp is not None:
            try:
                SpecifierSet(rp)
            except InvalidSpecifier:
                raise bad("requires-python", f"is {rp!r}, not a version specifier") from None
    tool = data.get("tool", {})
    pypm = tool.get("pypm", {}) if isinstance(tool, dict) else None
    if not isinstance(pypm, dict):
        raise bad("tool.pypm", "must be a table")
    for key, value in pypm.items():
        if key not in _TOOL_KEYS:
            raise bad(f"tool.pypm.{key}", f"is not one of {', '.join(_TOOL_KEYS)}")
        many = key != "index-url"
        if (many and (not isinstance(value, list) or not all(isinstance(v, str) for v in value))) or \
                (not many and not isinstance(value, str)):
            raise bad(f"tool.pypm.{key}", "must be " + ("an array of strings" if many else "a string"))
    return data


def environment_args(meta: dict[str, Any], where: Path | str, args: Any) -> Any:
    """What toolrun.tool_dir keys the environment by: the block's index options (a relative
    find-links path taken from `where`, the script's directory), --python and --offline."""
    pypm = (meta.get("tool") or {}).get("pypm") or {}
    return SimpleNamespace(
        python=getattr(args, "python", None), offline=getattr(args, "offline", False),
        upgrade=getattr(args, "upgrade", False),
        index_url=pypm.get("index-url"), extra_index_url=list(pypm.get("extra-index-url", [])),
        find_links=[x if "://" in x else os.path.realpath(os.path.join(where, os.path.expanduser(x)))
                    for x in pypm.get("find-links", [])])


def run_script(ctx: Any, args: Any, argv: list[str], meta: dict[str, Any],
               launch_flags: list[str] | None = None) -> int:
    """Run `argv` (the script, then its arguments) with the environment its metadata asks for
    (`meta`: read with deep=False; checked in full before an environment is made for it).
    `launch_flags`: from the entry point, the run's flags as pypm.launch sees them; a sandboxed
    run with a current environment is then recorded for the launcher to replay."""
    from .toolrun import found_environment, ready_environment, run_here, tool_dir

    given = [flag for attr, flag in (("extra", "--extra"), ("all_extras", "--all-extras"), ("no_dev", "--no-dev"),
                                     ("group", "--group"), ("only_group", "--only-group"), ("locked", "--locked"),
                                     ("no_install_project", "--no-install-project"),
                                     ("no_install_package", "--no-install-package"))
             if getattr(args, attr, None)]
    if given:
        raise UsageError(f"{', '.join(given)}: {argv[0]} names its own dependencies (PEP 723); "
                         "the project's selection does not apply", hint="leave the flag out")
    script = os.path.realpath(argv[0])
    env_args = environment_args(meta, os.path.dirname(script), args)
    # Keyed as written (spelled otherwise, the same requirement gets an environment of its own):
    # normalising them needs packaging, and a script's environment is found current without it
    requirements = [d.strip() for d in meta.get("dependencies", [])]
    if any(getattr(args, flag, None) for flag in ("with_", "with_editable", "with_requirements")):
        # `run --with REQ script.py`: added to its own (an environment of their own)
        from .toolrun import layered_requirements

        extra, env_args.editable = layered_requirements(ctx, args)
        requirements += extra
    venv = found_environment(requirements, env_args, meta.get("requires-python"), kind="script")
    if venv is None:  # made, locked again or synced: the full path (the next run may record a plan)
        root = tool_dir(requirements, env_args, meta.get("requires-python"), kind="script")
        venv = str(ready_environment(ctx, root, env_args, before_sync=lambda: _checked(meta, script),
                                     sandboxed=not getattr(args, "no_sandbox", False)))
        launch_flags = None
    ro: tuple[str, ...] = ()
    if not getattr(args, "no_sandbox", False):
        cwd = os.path.realpath(ctx.directory)
        if os.path.commonpath([script, cwd]) != cwd:  # the script alone, read-only: not its directory (~/ holds keys)
            if ":" in script:
                raise UsageError(f"{script}: a path with ':' cannot be bound into the sandbox (SRC:DST)",
                                 hint="run it from its own directory, or rename the path")
            ro = (script,)
    name = os.path.splitext(os.path.basename(script))[0]
    own = None
    if launch_flags is not None:  # the plan: the script's bytes (and its environment's files) decided this run
        from .launch import script_plan_path

        own = (script_plan_path(script), script, 2)
    return run_here(ctx, args, venv, [os.path.join(venv, "bin", "python"), script, *argv[1:]], "pypm run", name, ro,
                    launch_flags=launch_flags, own=own)


def fast_script(flags: set[str], values: dict[str, Any], cmd: list[str], argv: list[str]) -> int | None:
    """A script run from run's fast path (`pypm [-q] run [its flags] script.py ARGS`, parsed there
    into `flags`, `values` and `cmd`), without argparse and the CLI's handlers (~9 ms). None when
    the file's block is not a complete one after all: it then runs as any .py file does. Errors
    are reported as the CLI reports them."""
    from .run import _FastArgs

    script = os.path.abspath(cmd[0])
    try:
        meta = _remembered_metadata(script)
        if meta is None:
            return None
        args = _FastArgs("--frozen" in flags, values)
        args.no_sandbox = "--no-sandbox" in flags  # type: ignore[attr-defined]  # (run_here reads it)
        from .launch import _split

        launchable = _split(argv)  # this run's flags as pypm.launch will see them next time
        from .toolrun import EntryContext

        return run_script(EntryContext(os.getcwd(), "-q" in flags), args, [script, *cmd[1:]], meta,
                          launch_flags=launchable[0] if launchable else None)
    except (Exception, KeyboardInterrupt) as e:  # reported as cli.main reports it
        from .errors import report_failure

        return report_failure(e)


def _remembered_metadata(script: str) -> dict[str, Any] | None:
    """script_metadata(script, deep=False), read from the cache (META_DIR) when this pypm has read
    these very bytes before, else read and remembered there. The entry is trusted only if this
    user owns it and its directory (as pypm.launch trusts a plan): it names what the script's
    environment installs."""
    from sandbox.cachedir import ours

    from . import __version__
    from .config import cache_dir_str
    from .fastpath import json_dumps, json_loads, read_own_file, replace_file, sha256

    try:
        with open(script, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ProjectError(f"cannot read {script}: {e.strerror or e}") from None
    # The key: pypm's version, this module's identity (an edited pypm reads blocks afresh) and the bytes
    st = os.stat(__file__)
    key = sha256(b"%s\0%d:%d\0" % (__version__.encode(), st.st_size, st.st_mtime_ns) + data).hexdigest()
    path = os.path.join(cache_dir_str(), META_DIR, key[:2], key + ".json")
    own = read_own_file(path)
    try:
        if own is not None and ours(os.stat(os.path.dirname(path))):
            entry = json_loads(own[0].decode("utf-8"))
            meta = entry.get("meta", False) if isinstance(entry, dict) else False
            if meta is None or isinstance(meta, dict):
                return meta
    except (OSError, ValueError):
        pass
    meta = _metadata_of(data, script, deep=False)
    # What run_script reads: the other [tool] tables are not pypm's (and may hold TOML dates,
    # which JSON has no spelling for).
    kept = None if meta is None else {k: v for k, v in (
        ("dependencies", meta.get("dependencies")), ("requires-python", meta.get("requires-python")),
        ("tool", {"pypm": (meta.get("tool") or {}).get("pypm") or {}})) if v is not None}
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        replace_file(path, json_dumps({"meta": kept}, indent=False).encode(), mode=0o600)  # (ours() wants no group write)
    except OSError:  # a cache that cannot be written costs the next run ~10 ms, not this one
        pass
    return kept if meta is not None else None
