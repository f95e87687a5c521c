"""`pypm tool install|upgrade|uninstall|list|dir|run|update-shell`: command-line tools kept installed, as uv's `uv tool`.

Each tool gets an environment of its own, a virtual project locked and synced as `pypm x`'s are
(verified wheels, linked from the cache), kept in `tools_home()/<name>/` (not in the cache:
`pypm cache clean` must not remove what was installed). Its commands are put in the bin directory
(`~/.local/bin` by default), and they run **sandboxed**, as `pypm x` runs a tool: each is a small
shell script that runs `pypm x --from NAME -- COMMAND "$@"`, and `pypm x` takes an installed
tool's environment when it is asked for the tool by its bare name (as uvx does). The tool then
sees the directory it is run in (writable unless the install said --read-only-project), no
network unless the install said --network host, and nothing else of the home directory. The
sandbox flags given to `install` are written into the scripts. `install --no-sandbox` links the
commands to the environment's own scripts instead, as uv does.

A file in the bin directory is only replaced or removed when pypm put it there (a script that
says so, or a link into this tool's environment), unless `--force`.

What an install holds is in its receipt, `pypm-tool.json`, written last: a directory without
one is an install that did not finish, which the next install of that name starts over.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .errors import InstallError, UsageError
from .lockfile import canonical_name
from .toolrun import RECEIPT, receipt_args, read_receipt

__all__ = ["tool_command"]

_MARK = "# pypm tool:"  # the second line of each command script pypm writes
_SANDBOX_VALUED = (("network", "--network"), ("profile", "--profile"))
_SANDBOX_MANY = (("bind", "--bind"), ("ro_bind", "--ro-bind"), ("env", "--env"), ("limit", "--limit"))


def tool_command(ctx: Any, args: Any) -> int:
    action = args.action
    if action == "dir":
        from .config import tool_bin_dir_str, tools_home_str

        print(tool_bin_dir_str() if args.bin else tools_home_str())
        return 0
    if action == "list":
        return _list(ctx, args)
    if action == "install":
        return _install(ctx, args, args.requirement)
    if action == "update-shell":
        return _update_shell(ctx)
    names = list(args.names or [])
    if action == "upgrade":
        if bool(names) == bool(args.all):
            raise UsageError("`pypm tool upgrade` takes the tools to upgrade, or --all", hint="e.g. `pypm tool upgrade ruff`")
        todo = _installed_names() if args.all else [_installed_name(n) for n in names]
        for name in todo:
            _upgrade(ctx, args, name)
        if not todo:
            ctx.info("No tools installed")
        return 0
    for name in [_installed_name(n) for n in names]:  # uninstall (all known before any is removed)
        _uninstall(ctx, name)
    return 0


# --------------------------------------------------------------------------- install

def _env_args(args: Any) -> SimpleNamespace:
    """The environment's options as `install` was given them (the receipt keeps them: receipt_args)."""
    return SimpleNamespace(python=args.python, index_url=getattr(args, "index_url", None),
                           extra_index_url=list(getattr(args, "extra_index_url", None) or []),
                           find_links=list(getattr(args, "find_links", None) or []),
                           index_strategy=getattr(args, "index_strategy", None),
                           upgrade=False, offline=bool(getattr(args, "offline", False)))


def _sandbox_flags(args: Any) -> list[str]:
    """The sandbox flags given to `install`, as the command scripts pass them to `pypm x`: a bind's
    source and a profile's file made absolute (a script runs from anywhere)."""
    flags: list[str] = []
    for attr, flag in _SANDBOX_VALUED:
        value = getattr(args, attr, None)
        if value is not None:
            if attr == "profile" and "/" in value:  # a profile's file, as a bind's source
                value = os.path.abspath(os.path.expanduser(value))
            flags += [flag, value]
    for attr, flag in _SANDBOX_MANY:
        for value in getattr(args, attr, None) or []:
            if attr in ("bind", "ro_bind"):
                src, colon, dst = value.partition(":")
                value = os.path.abspath(os.path.expanduser(src)) + colon + dst
            flags += [flag, value]
    if getattr(args, "writable_project", None) is False:
        flags.append("--read-only-project")
    return flags


def _pypm_argv() -> list[str]:
    """How a command script starts this pypm: its `pypm` script when it was started as one, else
    this interpreter with `-m pypm`."""
    first = sys.argv[0] if sys.argv else ""
    if os.path.basename(first) == "pypm" and os.path.isfile(first) and os.access(first, os.X_OK):
        return [os.path.abspath(first)]
    return [sys.executable, "-m", "pypm"]


def _install(ctx: Any, args: Any, given: str) -> int:
    from packaging.requirements import Requirement

    from .config import tool_bin_dir_str, tools_home_str
    from .toolrun import editable_requirements, layered_requirements, parse_requirement_flag, tool_project

    editable = bool(args.editable)
    if editable:
        [requirement], _ = editable_requirements([given], str(ctx.directory), "--editable")
    else:
        requirement = parse_requirement_flag(given, "the tool", str(ctx.directory))
    name = canonical_name(Requirement(requirement).name)
    with_, editable_names = layered_requirements(ctx, args)
    home, bin_dir = Path(tools_home_str()), Path(tool_bin_dir_str())
    root = home / name
    sandboxed = not args.no_sandbox
    flags = _sandbox_flags(args) if sandboxed else []
    if not sandboxed:
        from .run import _SANDBOX_ONLY

        given_flags = [flag for attr, flag in _SANDBOX_ONLY if getattr(args, attr, None) not in (None, [])]
        if given_flags:
            raise UsageError(f"{', '.join(given_flags)} with --no-sandbox: the commands would run without the sandbox",
                             hint="leave out --no-sandbox, or the sandbox flags")
    env_args = _env_args(args)
    env_args.editable = ([name] if editable else []) + editable_names
    _, text = tool_project([requirement, *with_], env_args, kind="tool")
    env_args.reinstall = bool(args.reinstall)
    with _home_lock(home):
        old = read_receipt(name)
        old_files = {f: (root / f).read_bytes() for f in ("pyproject.toml", "pypm.lock") if (root / f).is_file()} \
            if old else {}
        if old is None and root.exists():
            shutil.rmtree(root)  # an install that did not finish (no receipt): started over
        same = old_files.get("pyproject.toml") == text.encode("utf-8")
        try:
            root.mkdir(parents=True, exist_ok=True)
            if not same:
                from .lockfile import write_atomic

                write_atomic(root / "pyproject.toml", text)
            venv = _ready(ctx, root, env_args, upgrade=False)
            version, commands = _provided(venv, name)
            _place_commands(ctx, name, venv, bin_dir, commands, flags, sandboxed, old, force=args.force)
        except BaseException as e:
            _undo(ctx, root, old, old_files, resync=not isinstance(e, KeyboardInterrupt))
            raise
        _write_receipt(root, {"name": name, "requirement": requirement, "with": with_, "python": args.python,
                              "index-url": env_args.index_url, "extra-index-url": env_args.extra_index_url,
                              "find-links": env_args.find_links, "index-strategy": env_args.index_strategy,
                              **({"editable": True} if editable else {}),
                              **({"with-editable": editable_names} if editable_names else {}),
                              "sandboxed": sandboxed, "sandbox-flags": flags, "bin-dir": str(bin_dir),
                              "commands": commands, "version": version})
    verb = "Reinstalled" if old is not None else "Installed"
    ctx.info(f"{verb} {name} {version}: {', '.join(commands)} in {bin_dir}"
             + ("" if sandboxed else " (unsandboxed: --no-sandbox)"))
    _say_path(ctx, bin_dir)
    return 0


def _undo(ctx: Any, root: Path, old: dict[str, Any] | None, old_files: dict[str, bytes], *, resync: bool) -> None:
    """After a failed install: a new one leaves nothing; a reinstall puts its pyproject.toml and
    pypm.lock back and syncs the environment to them again (the new ones may have been synced
    before the failure: no commands, a file in the way). Not after Ctrl-C, which should not start
    a sync: the environment's state then no longer matches, and the next `pypm x` of it (each
    sandboxed command is one) or install syncs it back; a --no-sandbox link runs it as it is."""
    if old is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    from .lockfile import write_atomic

    for rel, data in old_files.items():
        write_atomic(root / rel, data.decode("utf-8"))
    if resync:
        try:
            _ready(ctx, root, receipt_args(old, bool(getattr(ctx, "offline", False))), upgrade=False)
        except Exception as e:  # noqa: BLE001 - the install's own error is the one reported
            ctx.info(f"warning: {root.name}'s environment could not be put back as it was ({e}); "
                     f"`pypm tool install` it again")


def _ready(ctx: Any, root: Path, env_args: Any, *, upgrade: bool) -> Path:
    from .toolrun import ready_environment

    env_args.upgrade = upgrade
    return ready_environment(ctx, root, env_args)


def _provided(venv: Path, name: str) -> tuple[str, list[str]]:
    """(the tool's version, its commands: the package's own console and GUI scripts, and the
    files its wheel put in bin/ (ruff's binary, a `.data/scripts` script), as uv's; not its
    dependencies' or --with's), read from the environment."""
    from importlib.metadata import distributions

    sites = sorted((venv / "lib").glob("python*/site-packages"))
    bindir = os.path.realpath(venv / "bin")
    for dist in distributions(path=[str(s) for s in sites]):
        if canonical_name(dist.metadata["Name"] or "") != name:
            continue
        names = {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}
        for f in dist.files or ():  # (RECORD: a script's path is relative to site-packages, ../../../bin/NAME)
            where = os.path.realpath(os.path.join(str(dist.locate_file("")), str(f)))
            if os.path.dirname(where) == bindir:
                names.add(os.path.basename(where))
        commands = sorted(c for c in names if (venv / "bin" / c).is_file())
        if not commands:
            raise UsageError(f"{name} {dist.version} provides no commands",
                             hint="install the package that provides the command (with --with for its plugins), "
                                  "or run it with `pypm x --from`")
        return dist.version, commands
    raise InstallError(f"{name} is not installed in {venv}", hint="run `pypm tool install` again")


def _script(name: str, command: str, flags: list[str]) -> str:
    argv = [*_pypm_argv(), "x", "--from", name, *flags, "--", command]
    return ("#!/bin/sh\n"
            f"{_MARK} {name} (`pypm tool uninstall {name}` removes this file)\n"
            f'exec {" ".join(shlex.quote(a) for a in argv)} "$@"\n')


def _ours(path: Path, name: str) -> bool:
    """Whether `path` in the bin directory is this tool's, as pypm put it there: a link into its
    environment, or a script that says it is."""
    if path.is_symlink():
        from .config import tools_home_str

        target = os.path.realpath(path)
        return target.startswith(os.path.join(os.path.realpath(tools_home_str()), name, ".venv", "bin") + os.sep)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(512).splitlines()
    except OSError:
        return False
    return len(head) >= 2 and head[1].startswith(f"{_MARK} {name} ")


def _place_commands(ctx: Any, name: str, venv: Path, bin_dir: Path, commands: list[str], flags: list[str],
                    sandboxed: bool, old: dict[str, Any] | None, *, force: bool) -> None:
    """Each command in `bin_dir` (atomically), after every conflict has been checked: a file there
    that is not this tool's is refused, naming it, unless `force`. Commands an earlier install
    put there and this one does not provide are removed."""
    taken = [str(bin_dir / c) for c in commands if os.path.lexists(bin_dir / c) and not _ours(bin_dir / c, name)]
    if taken and not force:
        raise UsageError(f"{', '.join(taken)} already {'exists' if len(taken) == 1 else 'exist'}, "
                         f"and pypm did not put {'it' if len(taken) == 1 else 'them'} there for {name}",
                         hint="remove it, or pass --force to replace it")
    try:
        bin_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InstallError(f"cannot make {bin_dir}: {e.strerror or e}",
                           hint="set PYPM_TOOL_BIN_DIR to a writable directory") from None
    written: list[Path] = []
    for command in commands:
        target = bin_dir / command
        tmp = bin_dir / f".{command}.pypm-{os.getpid()}"
        try:
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            if sandboxed:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(_script(name, command, flags))
                os.chmod(tmp, 0o755)  # (whatever the umask: a command must be executable)
            else:
                os.symlink(venv / "bin" / command, tmp)
            os.replace(tmp, target)
            written.append(target)
        except OSError as e:
            for path in [tmp, *([] if old else written)]:  # (a new install leaves none of its commands)
                try:
                    path.unlink()
                except OSError:
                    pass
            raise InstallError(f"cannot write {target}: {e.strerror or e}",
                               hint="set PYPM_TOOL_BIN_DIR to a writable directory") from None
    if old:
        old_bin = Path(str(old.get("bin-dir") or bin_dir))
        for command in old.get("commands") or []:
            stale = old_bin / str(command)
            if (old_bin != bin_dir or command not in commands) and _ours(stale, name):
                stale.unlink()


def _write_receipt(root: Path, data: dict[str, Any]) -> None:
    from .fastpath import json_dumps
    from .lockfile import write_atomic

    write_atomic(root / RECEIPT, json_dumps(data) + "\n")


def _on_path(bin_dir: Path) -> bool:
    entries = [os.path.realpath(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    return os.path.realpath(bin_dir) in entries


def _say_path(ctx: Any, bin_dir: Path) -> None:
    if not _on_path(bin_dir):
        ctx.info(f"warning: {bin_dir} is not on PATH: run `pypm tool update-shell` (or add it yourself: "
                 f"export PATH=\"{bin_dir}:$PATH\") to run the commands by name")


# --------------------------------------------------------------------------- update-shell

_SHELL_MARK = "# added by `pypm tool update-shell`"


def _shell_files(home: Path) -> list[tuple[Path, str]]:
    """The startup files to put the bin directory on PATH in, with their syntax ("sh" or "fish"):
    ~/.profile always (login shells of sh, dash, and bash without a ~/.bash_profile), and a
    shell's own files when it is the user's shell ($SHELL) or its file is there already: bash's
    ~/.bashrc (interactive shells) and ~/.bash_profile (which makes bash skip ~/.profile), zsh's
    .zshenv (every zsh, in $ZDOTDIR), and a fish snippet in conf.d. As uv's update-shell."""
    shell = os.path.basename(os.environ.get("SHELL", ""))
    files = [(home / ".profile", "sh")]
    if shell == "bash" or (home / ".bashrc").exists():
        files.append((home / ".bashrc", "sh"))
    if (home / ".bash_profile").exists():
        files.append((home / ".bash_profile", "sh"))
    zdot = Path(os.environ.get("ZDOTDIR") or home)
    if shell == "zsh" or (zdot / ".zshenv").exists():
        files.append((zdot / ".zshenv", "sh"))
    fish = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "fish"
    if shell == "fish" or fish.is_dir():
        files.append((fish / "conf.d" / "pypm-tools.fish", "fish"))
    return files


def _path_line(bin_dir: str, syntax: str) -> str:
    if syntax == "fish":
        quoted = '"' + "".join("\\" + c if c in '"$\\' else c for c in bin_dir) + '"'
        return f"contains {quoted} $PATH; or set -gx PATH {quoted} $PATH"
    quoted = "".join("\\" + c if c in '"$`\\' else c for c in bin_dir)
    return f'export PATH="{quoted}:$PATH"'


def _update_shell(ctx: Any) -> int:
    """Add the tools' bin directory to PATH in the shell's startup files, unless it is on PATH
    already (once: a file that has the line already is left alone). Each file is rewritten whole, atomically, keeping its mode."""
    from .config import tool_bin_dir_str
    from .fastpath import replace_file

    bin_dir = tool_bin_dir_str()
    if _on_path(Path(bin_dir)):  # (as uv's: nothing to add)
        ctx.info(f"{bin_dir} is on PATH already")
        return 0
    home = Path(os.path.expanduser("~"))
    changed, present = [], []
    for path, syntax in _shell_files(home):
        line = _path_line(bin_dir, syntax)
        try:
            old = path.read_text(encoding="utf-8", errors="surrogateescape") if path.exists() else None
        except OSError as e:
            raise InstallError(f"cannot read {path}: {e.strerror or e}",
                               hint=f"add `{line}` to it yourself, or fix its permissions") from None
        if old is not None and line in old.splitlines():
            present.append(path)
            continue
        text = (old or "")
        if text and not text.endswith("\n"):
            text += "\n"
        text += f"\n{_SHELL_MARK}\n{line}\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = path.stat().st_mode & 0o7777 if old is not None else 0o644
            replace_file(str(path), text.encode("utf-8", "surrogateescape"), mode)
        except OSError as e:
            raise InstallError(f"cannot write {path}: {e.strerror or e}",
                               hint=f"add `{line}` to it yourself, or fix its permissions") from None
        changed.append(path)
    for path in changed:
        ctx.info(f"Added {bin_dir} to PATH in {path}")
    if changed:
        ctx.info("Start a new shell (or `source` the file) for it to take effect")
    else:
        ctx.info(f"{bin_dir} is added to PATH in {', '.join(map(str, present))} already: start a new shell "
                 "for it to take effect")
    return 0


class _home_lock:
    """One install, upgrade or removal at a time in the tools' directory (filelock: the same lock
    file across processes)."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def __enter__(self) -> None:
        from filelock import FileLock

        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InstallError(f"cannot make {self.home}: {e.strerror or e}",
                               hint="set PYPM_TOOL_DIR to a writable directory") from None
        self._lock = FileLock(str(self.home / ".lock"))
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


# --------------------------------------------------------------------------- upgrade, uninstall, list

def _installed_names() -> list[str]:
    from .config import tools_home_str

    home = tools_home_str()
    try:
        names = sorted(os.listdir(home))
    except OSError:
        return []
    return [n for n in names if not n.startswith(".") and read_receipt(n) is not None]


def _installed_name(given: str) -> str:
    name = canonical_name(given)
    if read_receipt(name) is None:
        have = _installed_names()
        raise UsageError(f"{given} is not installed", hint=f"installed: {', '.join(have)}" if have
                         else "install it with `pypm tool install`")
    return name


def _upgrade(ctx: Any, args: Any, name: str) -> None:
    from .config import tools_home_str

    root = Path(tools_home_str()) / name
    with _home_lock(root.parent):
        receipt = read_receipt(name)
        if receipt is None:
            raise UsageError(f"{name} is not installed", hint="install it with `pypm tool install`")
        before = receipt.get("version")
        venv = _ready(ctx, root, receipt_args(receipt, bool(args.offline)), upgrade=True)
        version, commands = _provided(venv, name)
        sandboxed = receipt.get("sandboxed") is not False
        bin_dir = Path(str(receipt.get("bin-dir")))
        _place_commands(ctx, name, venv, bin_dir, commands, list(receipt.get("sandbox-flags") or []), sandboxed,
                        receipt, force=False)
        _write_receipt(root, {**receipt, "commands": commands, "version": version})
    ctx.info(f"Upgraded {name} {before} -> {version}" if version != before else f"{name} {version} is the newest")


def _uninstall(ctx: Any, name: str) -> None:
    from .config import tools_home_str

    root = Path(tools_home_str()) / name
    with _home_lock(root.parent):
        receipt = read_receipt(name)
        if receipt is None:
            return
        bin_dir = Path(str(receipt.get("bin-dir")))
        removed = []
        for command in receipt.get("commands") or []:
            path = bin_dir / str(command)
            if _ours(path, name):
                path.unlink()
                removed.append(str(command))
        (root / RECEIPT).unlink()  # first: a half-removed tool is no longer "installed"
        shutil.rmtree(root, ignore_errors=True)
    ctx.info(f"Uninstalled {name}" + (f" ({', '.join(removed)})" if removed else ""))


def _list(ctx: Any, args: Any) -> int:
    from .config import tools_home_str

    names = _installed_names()
    if not names:
        ctx.info("No tools installed")
        return 0
    lines = []
    for name in names:
        receipt = read_receipt(name) or {}
        head = f"{name} v{receipt.get('version')}"
        if args.show_paths:
            head += f" ({os.path.join(tools_home_str(), name)})"
        if receipt.get("sandboxed") is False:
            head += " [unsandboxed]"
        lines.append(head)
        for command in receipt.get("commands") or []:
            path = os.path.join(str(receipt.get("bin-dir")), str(command))
            lines.append(f"- {command}" + (f" ({path})" if args.show_paths else ""))
    print("\n".join(lines))
    return 0
