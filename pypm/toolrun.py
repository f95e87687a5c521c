"""`pypm x`: run a command-line tool from the index in an environment of its own, sandboxed.

What uvx (`uv tool run`) does, with pypm's difference: the tool runs in the sandbox, with the
current directory as its project (writable unless --read-only-project, with its pyproject.toml,
pypm.lock and .git read-only as for `pypm run`), no network unless --network host, and nothing
else of the host's home. A formatter or linter from the index sees the tree it works on and
nothing more.

The environment is a virtual project of its own in the cache, `tools/<key>/` (pyproject.toml,
pypm.lock, .venv), keyed by the requirements, the interpreter asked for and the index options.
The first run locks and syncs it like any project (verified wheels, linked from the cache); later
runs find it current from its state file, without the resolver or the network, as `pypm run`
does. The lock pins what the first run chose: `--upgrade` moves to the newest release.

`pypm run script.py` (PEP 723, pypm.script) makes and runs a script's environment with the same
three functions: `tool_dir`, `ready_environment` and `run_here`.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from .errors import UsageError

TYPE_CHECKING = False  # (not `from typing import`: typing costs ~2-5 ms on a script's run)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, Sequence

__all__ = ["x_command", "fast_x", "tool_dir", "tool_project", "found_environment", "ready_environment",
           "current_venv", "run_here", "EntryContext", "before_sandboxed_sync"]

# This module is on the path of a PEP 723 script's run (pypm.script) and of `pypm x` (fast_x),
# where an environment found current is run without the CLI: its top imports only os, sys and
# types. json (its decoder imports re), pathlib, re, typing and hashlib (OpenSSL: ~8 ms) are
# imported where a Path is made or a requirement parsed.

# [tool.pypm.sandbox] at project.SandboxConfig's defaults, as venvstate.tool_knobs writes it into
# state.json (a test keeps them equal): the settings of a tool's or a script's run (run_here).
DEFAULT_SANDBOX = {"network": "none", "bind": [], "ro-bind": [], "env": [], "profile": "default",
                   "writable-project": True, "limits": {}}
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_CHARS = _ALNUM | frozenset("._-")
_DIGITS = frozenset("0123456789")


def _simple_tool(word: str) -> tuple[str, str] | None:
    """(name, version or "") of `NAME` or `NAME@1.2.3`, spelled as packaging would spell the
    requirement (so str(Requirement(...)) leaves it unchanged); else None. By hand, not a regular
    expression: the fast path of `pypm x` (fast_x) does not import re (~3 ms)."""
    name, at, version = word.partition("@")
    if not name or name[0] not in _ALNUM or name[-1] not in _ALNUM or not _NAME_CHARS.issuperset(name):
        return None
    if at and not all(part and _DIGITS.issuperset(part) for part in version.split(".")):
        return None
    return name, version


def _simple_requirement(text: str) -> str | None:
    """`NAME` or `NAME==1.2.3` when `text` is one of those exactly as packaging would write the
    requirement (str(Requirement(text)) == text); else None."""
    name, eq, version = text.partition("==")
    if "@" in name or _simple_tool(name) is None:
        return None
    if eq and (not version or not all(part and _DIGITS.issuperset(part) for part in version.split("."))):
        return None
    return text


class EntryContext:
    """cli.Context for a run from the entry point (a script's, `pypm x`'s), without argparse:
    messages as the CLI prints them (a script's first run says what it locked and synced)."""

    verbose = 0

    def __init__(self, directory: str, quiet: bool) -> None:
        self.directory = directory
        self.quiet = quiet

    def info(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr)

    def debug(self, msg: str) -> None:
        pass


class _ToolContext:
    """The command's context, pointed at the tool's project directory."""

    def __init__(self, ctx: Any, directory: Path) -> None:
        self.directory = directory
        self.verbose = ctx.verbose
        self.quiet = ctx.quiet
        self._ctx = ctx

    def project(self) -> Any:
        from .project import load_project

        return load_project(self.directory)

    def info(self, msg: str) -> None:
        self._ctx.info(msg)

    def debug(self, msg: str) -> None:
        self._ctx.debug(msg)


def _plain_requirements(from_: str | None, with_: Sequence[str], command: str) -> tuple[list[str], str] | None:
    """_requirements' answer when every requirement is in a plain form (`--from NAME`, `--with
    NAME==1.2.3`, the command as `NAME` or `NAME@1.2.3`), spelled as packaging would spell them
    without importing it (~28 ms); None for anything else. The only forms `pypm x`'s fast path
    (fast_x) takes."""
    if from_ is not None:  # `--from SPEC CMD`: CMD is a command of SPEC's, as written
        main = _simple_requirement(from_)
    else:
        simple = _simple_tool(command)
        if simple is None:
            return None
        command, version = simple
        main = f"{command}=={version}" if version else command
    if main is None or not all(_simple_requirement(w) is not None for w in with_):
        return None
    return [main, *with_], command


def parse_requirement_flag(text: str, what: str, cwd: str | None = None) -> str:
    """A requirement given on the command line (`--from`, `--with`) as packaging spells it, and
    refused naming `what` when it is not one. A path (`./tool`, `~/src/tool`, `dist/x.whl`;
    relative to `cwd`, default the working directory) is `NAME @ file:///ABS`, NAME read from its
    pyproject.toml or file name, as uv takes one: the environment's lock then builds it from
    there (pypm.pathdeps), and its absolute path keys the environment."""
    simple = _simple_requirement(text)
    if simple is not None:  # `--from httpie`, `--with rich==13.9.4`: as packaging spells them, without it (~28 ms)
        return simple
    from pathlib import Path

    from .edit import local_source, looks_local, named_url, parse_requirement

    if looks_local(text):
        from packaging.requirements import Requirement

        name, where = local_source(text, Path(cwd if cwd is not None else os.getcwd()))
        return str(Requirement(f"{name} @ {where.as_uri()}"))
    req = parse_requirement(named_url(text, what), what, remote_urls=True, local_urls=True)
    if req.url and req.url.startswith("file:") and not _absolute_file_url(req.url):
        raise UsageError(f"{what} {text!r}: a relative file: URL has nothing to be relative to here",
                         hint=f"give the path itself ({what} ./{req.url[5:].lstrip('/')}), or an absolute file:/// URL")
    return str(req)


def _absolute_file_url(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.netloc in ("", "localhost") and parts.path.startswith("/")


def with_requirements_files(ctx: Any, args: Any) -> None:
    """`--with-requirements FILE` (as uv's): the file's requirements added to `args.with_`, its
    `-e DIR` lines to `args.with_editable` (pypm.edit.read_requirements_file reads it as pip does)."""
    files = getattr(args, "with_requirements", None) or []
    if not files:
        return
    from pathlib import Path

    from .edit import read_requirements_file

    args.with_, args.with_editable = list(args.with_), list(getattr(args, "with_editable", None) or [])
    for f in files:
        reqs, edits = read_requirements_file(ctx, Path(ctx.directory, f))
        args.with_ += reqs
        args.with_editable += edits


def layered_requirements(ctx: Any, args: Any) -> tuple[list[str], list[str]]:
    """`--with`, `--with-editable` and `--with-requirements` (run's, a script's run's, tool
    install's): (the requirements, the names tool_project's `args.editable` makes editable)."""
    cwd = str(ctx.directory)
    with_requirements_files(ctx, args)
    extra, names = editable_requirements(getattr(args, "with_editable", None) or [], cwd)
    return [parse_requirement_flag(w, "--with", cwd) for w in args.with_] + extra, names


def editable_requirements(paths: Sequence[str], cwd: str, what: str = "--with-editable") -> tuple[list[str], list[str]]:
    """`--with-editable PATH...` (as uv's; `what`: the flag): (their requirements, `NAME @
    file:///DIR`, and their canonical names, which tool_project's `args.editable` makes editable
    sources). Only a project directory can be installed editable (a UsageError naming the flag
    otherwise)."""
    from .lockfile import canonical_name

    requirements, names = [], []
    for path in paths:
        req = parse_requirement_flag(path, what, cwd)
        if local_directory(req) is None:
            raise UsageError(f"{what} {path}: only a project directory can be installed editable",
                             hint="give the path of its source directory; a package from an index is never editable")
        requirements.append(req)
        names.append(canonical_name(_name_of(req)))
    return requirements, names


def _name_of(requirement: str) -> str:
    """The name of a requirement as parse_requirement_flag writes it (`NAME[extras] @ URL`)."""
    return requirement.partition("@")[0].partition("[")[0].strip()


def local_directory(requirement: str) -> str | None:
    """The directory a `NAME @ file:///ABS` requirement names, when it is one; else None."""
    if "@ file:" not in requirement:
        return None
    from urllib.parse import unquote, urlsplit

    path = unquote(urlsplit(requirement.partition("@")[2].strip().split(";")[0].strip()).path)
    return path if os.path.isdir(path) else None


def _requirements(args: Any, argv: list[str], cwd: str) -> tuple[list[str], str]:
    """(requirements, command): `ruff` -> ruff; `ruff@0.6.9` -> ruff==0.6.9; `--from SPEC CMD`
    (`--from ./tool CMD`: a path, relative to `cwd`)."""
    command = argv[0]
    plain = _plain_requirements(args.from_ or None, args.with_, command)
    if plain is not None:  # the usual `pypm x ruff ...` (and plain --from/--with): no packaging
        return plain

    def parse(text: str, what: str) -> str:
        return parse_requirement_flag(text, what, cwd)

    if args.from_:
        main = parse(args.from_, "--from")
    else:
        name, at, version = command.partition("@")
        if at and not version:
            raise UsageError(f"{command!r}: give a version after @, or none", hint="e.g. `pypm x ruff@0.6.9 check .`")
        if version == "latest":  # as uvx: the newest release, whatever the environment locked before
            args.upgrade, at = True, ""
        main = parse(f"{name}=={version}" if at else name, "the command")
        command = name
    return [main, *(parse(w, "--with") for w in args.with_)], command


def tool_dir(requirements: list[str], args: Any, requires_python: str | None = None,
             kind: str = "x", floor: str | None = None) -> Path:
    """The environment's project directory (made, with its pyproject.toml, when new). `args`: its
    python, index_url, extra_index_url and find_links; `requires_python`: the lock's range
    (default: the interpreter's minor and newer; `floor`: see tool_project)."""
    from pathlib import Path

    root, text = tool_project(requirements, args, requires_python, kind, floor)
    if _pyproject_text(root) != text:
        from .lockfile import write_atomic  # (its dataclasses: ~6 ms a run that finds it current skips)

        try:
            os.makedirs(root, exist_ok=True)
            write_atomic(Path(root) / "pyproject.toml", text)
        except OSError as e:  # a cache directory that is a file, or read-only: as the sync says it
            from .cache import cannot_make

            raise cannot_make(root, e.strerror or e) from None
    return Path(root)


def tool_project(requirements: list[str], args: Any, requires_python: str | None = None,
                 kind: str = "x", floor: str | None = None) -> tuple[str, str]:
    """(the environment's project directory, the pyproject.toml it must hold): tool_dir's key and
    file, computed without writing anything (and without pathlib or OpenSSL). `floor`: the
    default requires-python (`>=3.11`) when the caller knows `args.python`'s version already
    (run's fast path, from state.json): it is not part of the key."""
    from .config import cache_dir_str
    from .fastpath import json_dumps as dumps  # json.dumps without the json package (whose decoder imports re)
    from .fastpath import sha256  # CPython's own: hashlib would load OpenSSL (~8 ms) for one small hash

    def strip(url: str) -> str:
        # Without `user:password@` (kept for this process's requests by pypm.credentials): they key
        # the environment and are written into its pyproject.toml. (pypm.credentials only for a URL
        # that may hold them: a script's run, on the fast path, comes here.)
        if "@" not in url:
            return url
        from .credentials import strip as without_credentials

        return without_credentials(url)

    index_url = strip(args.index_url) if args.index_url else args.index_url
    options = {"requirements": requirements, "requires-python": requires_python, "python": args.python, "index-url": index_url,
               "extra-index-url": [strip(u) for u in args.extra_index_url], "find-links": [
                   # (os.path.realpath is what Path.resolve() does, without pathlib)
                   strip(x) if "://" in x else os.path.realpath(os.path.expanduser(x)) for x in args.find_links]}
    strategy = getattr(args, "index_strategy", None)
    if strategy:  # (only then: the other environments keep their keys)
        options["index-strategy"] = strategy
    # `tool install --editable DIR`: its requirement (`NAME @ file:///DIR`) becomes a source of
    # [tool.pypm.sources], the one way a project says editable (pypm.pathdeps)
    editable: dict[str, str] = {}
    for name in getattr(args, "editable", None) or ():
        from .lockfile import canonical_name

        for i, req in enumerate(requirements):
            directory = local_directory(req) if canonical_name(_name_of(req)) == name else None
            if directory is not None:
                editable[name] = directory
                requirements = [*requirements[:i], req.partition("@")[0].strip(), *requirements[i + 1:]]
                break
        else:
            raise UsageError(f"--editable {name}: only a project directory can be installed editable",
                             hint="give the path of its source (`pypm tool install --editable ./tool`)")
    if editable:
        options["requirements"], options["editable"] = requirements, editable
    if kind == "with":  # `run --with`'s: not the `pypm x` environment of the same list (another pyproject.toml)
        options["kind"] = kind
    key = sha256(dumps(options, indent=False).encode()).hexdigest()[:24]
    root = os.path.join(cache_dir_str(), "tools", key)
    tool: dict[str, Any] = {k: v for k, v in (("python", args.python), ("index-url", index_url),
                                              ("extra-index-url", options["extra-index-url"]),
                                              ("find-links", options["find-links"]),
                                              ("index-strategy", strategy)) if v}
    if requires_python is None and floor is not None:
        requires_python = floor
    elif requires_python is None:
        if args.python:  # the lock's lower bound: the interpreter's minor (queried once, then cached)
            from .interpreter import find_interpreter

            major, minor = find_interpreter(args.python, None).version[:2]
        else:  # the environment gets the newest on PATH; this one's minor is the floor, as a project's
            major, minor = sys.version_info[:2]
        requires_python = f">={major}.{minor}"
    made = {"script": "run", "with": "run --with", "tool": "tool install"}.get(kind, "x")
    whose = ("`pypm tool uninstall` removes it" if kind == "tool"
             else "the cache's, not yours: `pypm cache clean` removes it")
    lines = [f"# made by `pypm {made}`; {whose}", "[project]", f'name = "pypm-{kind}-{key[:12]}"', 'version = "0"',
             f"requires-python = {dumps(requires_python, indent=False)}", f"dependencies = {dumps(requirements, indent=False)}"]
    if tool:
        lines.append("\n[tool.pypm]")
        lines += [f"{k} = {dumps(v, indent=False)}" for k, v in tool.items()]  # JSON strings and arrays are TOML ones
    if editable:
        lines.append("\n[tool.pypm.sources]")
        lines += [f"{dumps(n, indent=False)} = {{ path = {dumps(d, indent=False)}, editable = true }}"
                  for n, d in sorted(editable.items())]
    return root, "\n".join(lines) + "\n"


def found_environment(requirements: list[str], args: Any, requires_python: str | None = None,
                      kind: str = "x", floor: str | None = None) -> str | None:
    """The venv of tool_dir's environment when it is current (its pyproject.toml as tool_dir
    would write it, synced from it and its lock: current_venv), unless `args.upgrade` asks for
    a new lock; else None. Writes nothing: a script's run from the entry point (pypm.script)."""
    if getattr(args, "upgrade", False):
        return None
    root, text = tool_project(requirements, args, requires_python, kind, floor)
    return current_venv(root, args.python) if _pyproject_text(root) == text else None


def _pyproject_text(root: str) -> str | None:
    try:
        with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None


def _bare_name(requirements: list[str]) -> str | None:
    """The canonical name when the requirements are one package by its bare name (`ruff`,
    `--from ruff`: no version, no --with), the form for which an installed tool's environment is
    taken (as uvx takes one); else None. By hand: the fast path imports no packaging."""
    if len(requirements) != 1 or _simple_tool(requirements[0]) != (requirements[0], ""):
        return None
    out: list[str] = []
    for ch in requirements[0].lower():
        c = "-" if ch in "._-" else ch
        if not (c == "-" and out and out[-1] == "-"):
            out.append(c)
    return "".join(out)


RECEIPT = "pypm-tool.json"  # an installed tool's record (pypm.toolinstall), written last


def receipt_path(name: str) -> str:
    """The receipt of the installed tool `name` (canonical), whether or not it exists."""
    from .config import tools_home_str

    return os.path.join(tools_home_str(), name, RECEIPT)


def read_receipt(name: str) -> dict[str, Any] | None:
    """The receipt when `pypm tool install` installed the tool `name`, else None."""
    from .fastpath import json_loads

    try:
        with open(receipt_path(name), encoding="utf-8") as f:
            receipt = json_loads(f.read())
    except (OSError, ValueError):
        return None
    return receipt if isinstance(receipt, dict) and receipt.get("name") == name else None


def receipt_args(receipt: dict[str, Any], offline: bool) -> Any:
    """An installed tool's environment's options, as its install gave them (its python, index,
    which of its packages are installed editable: the tool's (`--editable`), `--with-editable`'s)."""
    return SimpleNamespace(python=receipt.get("python"), index_url=receipt.get("index-url"),
                           extra_index_url=list(receipt.get("extra-index-url") or []),
                           find_links=list(receipt.get("find-links") or []),
                           index_strategy=receipt.get("index-strategy"), upgrade=False, offline=offline,
                           editable=([receipt["name"]] if receipt.get("editable") else [])
                           + list(receipt.get("with-editable") or []))


def _uses_defaults(args: Any) -> bool:
    """No flag of x's that names another environment than an installed tool's."""
    return not (getattr(args, "python", None) or getattr(args, "index_url", None) or getattr(args, "extra_index_url", None)
                or getattr(args, "find_links", None) or getattr(args, "index_strategy", None)
                or getattr(args, "upgrade", False))


def x_command(ctx: Any, args: Any) -> int:
    """`pypm x [--from SPEC] [--with REQ]... CMD ARGS...`: the command's exit status."""
    argv = list(args.cmd or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("`pypm x` needs a command", hint="e.g. `pypm x ruff check .` or `pypm x --from httpie http URL`")
    from .run import env_file_vars

    env_file_vars(ctx, args)  # (a bad --env-file fails before the tool's environment is made)
    with_requirements_files(ctx, args)
    requirements, command = _requirements(args, argv, str(ctx.directory))
    if getattr(args, "with_editable", None):
        extra, args.editable = editable_requirements(args.with_editable, str(ctx.directory))
        requirements += extra
    name = _bare_name(requirements)
    installed = read_receipt(name) if name is not None and _uses_defaults(args) else None
    if name is not None and installed is not None:  # `pypm tool install`'s environment, as uvx takes one
        from pathlib import Path

        root = os.path.dirname(receipt_path(name))
        venv = ready_environment(ctx, Path(root), receipt_args(installed, bool(args.offline)),
                                 sandboxed=not args.no_sandbox)
    else:
        venv = ready_environment(ctx, tool_dir(requirements, args), args, sandboxed=not args.no_sandbox)
    exe = venv / "bin" / command
    if not os.path.isfile(exe):
        bins = sorted(p.name for p in (venv / "bin").iterdir()
                      if not p.name.startswith(("python", "activate", "pip")) and p.name != "pypm-venv")
        raise UsageError(f"{command} is not a command of {', '.join(requirements)}",
                         hint=(f"it provides: {', '.join(bins)}; name one, or the package with --from"
                               if bins else "it installs no commands; name the package that does with --from"))
    argv[0] = str(exe)
    return run_here(ctx, args, venv, argv, "pypm x", command)


def fast_x(argv: Sequence[str]) -> int | None:
    """`pypm [-q] x [run's sandbox flags] [--from REQ] [--with REQ]... [--] TOOL[@VERSION] ARGS`
    straight from the entry point, when TOOL's environment is current and holds its command: what
    x_command does then, without argparse, the CLI's handlers and the project model (~25 ms).
    --from and --with only in their plain forms (`NAME`, `NAME==1.2.3`). A sandboxed run is
    recorded for pypm.launch to replay (keyed by the directory, --from/--with and TOOL), as a
    project's run is. None: not handled, and nothing was done (other requirement forms, --python,
    the index flags, --upgrade, an environment to make: the full CLI then does exactly what it
    would have). Errors are reported as the CLI reports them."""
    from .run import _FastArgs, _fast_parse, sandbox_values

    values: dict[str, Any] = {}
    parsed = _fast_parse(argv, values, command="x")
    if parsed is None:
        return None
    flags, cmd = parsed
    from_, with_ = values.pop("from_", None), values.pop("with_", [])
    no_sandbox = "--no-sandbox" in flags
    if no_sandbox and sandbox_values(values):  # (sandbox flags without the sandbox: the CLI says they do nothing)
        return None
    # The requirements as _requirements gives them (the environment's key is their text), for
    # their plain forms only, and a command that is a plain file name in the environment's bin/;
    # anything else is the CLI's.
    plain = _plain_requirements(from_, with_, cmd[0])
    if plain is None or not _NAME_CHARS.issuperset(plain[1]) or plain[1].strip(".") == "":
        return None
    requirements, name = plain
    try:
        cwd = os.getcwd()
    except OSError:
        return None  # (removed under the shell: the CLI says so)
    args: Any = _FastArgs(False, values)
    # x's other flags at argparse's defaults (index options absent: the environment's own lock names its index)
    args.no_sandbox, args.python, args.index_url, args.extra_index_url, args.find_links = no_sandbox, None, None, [], []
    bare = _bare_name(requirements)
    try:
        installed = read_receipt(bare) if bare is not None else None
        if bare is not None and installed is not None:  # an installed tool's environment (x_command's choice), when current
            venv = current_venv(os.path.dirname(receipt_path(bare)), installed.get("python"))
        else:
            venv = found_environment(requirements, args)
        exe = os.path.join(venv, "bin", name) if venv is not None else ""
        if venv is None or not os.path.isfile(exe):
            return None  # made or synced first, or the command is not the tool's: the CLI says which
        own = None
        from .launch import _split, tool_key, tool_plan_path

        launchable = None if no_sandbox else _split(argv)  # this run's flags as pypm.launch will see them next time
        if launchable is not None:
            own = (tool_plan_path(cwd, tool_key(launchable[0], cmd[0])), exe, 1)
        # (the plan also vouches for the tool's install receipt, there or not: an install or an
        # uninstall changes which environment the same words run)
        vouch = [receipt_path(bare)] if bare is not None else []
        return run_here(EntryContext(cwd, "-q" in flags), args, venv, [exe, *cmd[1:]], "pypm x", name,
                        launch_flags=launchable[0] if launchable else None, own=own, vouch=vouch)
    except (Exception, KeyboardInterrupt) as e:  # reported as cli.main reports it
        from .errors import report_failure

        return report_failure(e)


def ready_environment(ctx: Any, root: Path, args: Any,
                      before_sync: Callable[[], Any] | None = None, *, sandboxed: bool = False) -> Path:
    """The venv of the environment project at `root`, locked and synced when it is not current
    (`args.upgrade`: locked again to the newest releases first; `before_sync` is called first);
    touched as used. `sandboxed`: the command runs in the sandbox next (its helper is built
    meanwhile when it is not yet: sandbox.native.prebuild)."""
    from pathlib import Path

    upgrade = getattr(args, "upgrade", False)
    reinstall = getattr(args, "reinstall", False)  # (`tool install --reinstall`: a path dependency built again too)
    found = None if upgrade or reinstall else current_venv(str(root), args.python)
    if found is not None:
        ctx.debug(f"{found} matches its pyproject.toml and pypm.lock: not syncing")
        return Path(found)
    if sandboxed:
        before_sandboxed_sync(ctx, args)
    tctx = _ToolContext(ctx, root)
    want: Any = SimpleNamespace(extra=[], all_extras=False, no_dev=False, group=[], only_group=[],
                                no_install_project=False, python=args.python, frozen=False, offline=args.offline,
                                reinstall=reinstall)
    if before_sync is not None:
        before_sync()
    project = tctx.project()
    if upgrade:
        from .locking import LockOptions, lock_project

        lock_project(tctx, project, LockOptions(upgrade=True, offline=args.offline))
    from .sync import SyncOptions, ensure_synced

    venv = ensure_synced(tctx, project, SyncOptions.from_args(want))
    _touch(str(root))
    return venv


def before_sandboxed_sync(ctx: Any, args: Any) -> None:
    """For a command that runs sandboxed after a sync of its own (`run`, `shell`, `x`, a script):
    a typo in a sandbox flag is said now, not after the sync (sandboxing.check_flags), and the
    sandbox's compiled helper, if it is not built yet, starts building, so that the compiler's
    ~0.5 s overlaps the sync (sandbox.native.prebuild)."""
    try:
        from sandbox.cachedir import default_cache_dir
        from sandbox.native import prebuild
    except ImportError:  # a build of pypm without the sandbox: the run says so
        return
    from .sandboxing import check_flags

    check_flags(ctx, args)
    prebuild(default_cache_dir())


def current_venv(root: str, python: str | None) -> str | None:
    """The venv of the environment project at `root` when it is synced from its current
    pyproject.toml and pypm.lock (touched as used), else None: the check of ready_environment,
    for a script's run from the entry point."""
    from .run import default_state_matches

    venv = os.path.join(root, ".venv")
    if default_state_matches(root, python_flag=python) is None or not os.path.exists(os.path.join(venv, "bin", "python")):
        return None
    _touch(root)
    return venv


def _touch(root: str) -> None:
    try:
        os.utime(root)  # used now: `pypm cache prune` removes environments unused for its --days
    except OSError:
        pass


def run_here(ctx: Any, args: Any, venv: Path | str, argv: list[str], who: str, name: str,
             ro_binds: tuple[str, ...] = (), *, launch_flags: Sequence[str] | None = None,
             own: tuple[str, str, int] | None = None, vouch: Sequence[str] = ()) -> int:
    """Run `argv` with `venv` activated, in the sandbox with the current directory standing in for
    the project (or on the host with --no-sandbox). `ro_binds`: more directories to show, read-only.
    `launch_flags` and `own` (the plan's path, the file that decided the command: the script or
    the tool's command, how many of argv's first words the plan holds): a run from the entry point
    (a script's, `pypm x`'s) whose policy is recorded for pypm.launch to replay (launch.record),
    also vouching for the environment's pyproject.toml and pypm.lock, and for the files in `vouch`."""
    from .run import _run_sandboxed, env_file_vars, spawn_and_wait, venv_environment

    env = venv_environment(venv)
    for var, value in env_file_vars(ctx, args).items():  # (a script's run: --env-file; sandboxed, as below)
        env.setdefault(var, value)
    if args.no_sandbox:
        return spawn_and_wait(argv, env)
    # The current directory is the "project": bound at its own path, as `pypm run` binds a project;
    # the sandbox's settings are the defaults and the flags (the cwd's own pyproject.toml is not
    # this environment's: its [tool.pypm.sandbox] does not apply).
    from .config import cache_dir_str
    from .errors import SandboxError

    cwd = os.path.realpath(ctx.directory)
    # The current directory is bound in (writable by default). Where that is the home directory,
    # or holds it or the cache, the command would get what the sandbox exists to keep from it:
    # the user's keys and tokens, and the other environments in the cache, into which it could
    # write code that a later run (perhaps with --no-sandbox) would execute.
    from .config import tools_home_str

    home = os.path.realpath(os.path.expanduser("~"))
    for what, inner in (("your home directory", home), ("pypm's cache", os.path.realpath(cache_dir_str())),
                        ("the tools pypm installed", os.path.realpath(tools_home_str()))):
        if inner == cwd or inner.startswith(cwd.rstrip("/") + "/"):
            raise SandboxError(f"{who} binds the current directory into the sandbox, and {cwd} "
                               f"{'is' if inner == cwd else 'holds'} {what} ({inner})",
                               hint="cd into the directory it should work on, or pass --no-sandbox "
                                    "to run it on the host")
    # The stand-in project's facts as pypm.sandboxing takes a synced project's from its state.json
    # (venvstate.tool_knobs): its name, and [tool.pypm.sandbox] at its defaults with the script's
    # read-only bind. Not a project.SandboxConfig: pypm.project's imports (dataclasses, hashlib)
    # cost a run ~30 ms. The plan's checks (launch.record) read the same facts.
    known = (cwd, {"name": name, "sandbox": {**DEFAULT_SANDBOX, "ro-bind": list(ro_binds)}})
    args.command = "run"
    if launch_flags is not None and own is not None:
        env_root = os.path.dirname(venv)
        decided = [own[1], os.path.join(env_root, "pyproject.toml"), os.path.join(env_root, "pypm.lock"), *vouch]
        return int(_run_sandboxed()(ctx, None, venv, argv, env, args, known=known, launch_flags=launch_flags,
                                    own=(own[0], decided, argv[:own[2]])))
    return int(_run_sandboxed()(ctx, None, venv, argv, env, args, known=known))
