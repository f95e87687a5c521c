"""The `pypm` command line: parses arguments, calls the workflow modules, prints results.

No workflow logic lives here. Heavy modules are imported inside the handlers that need
them, so `pypm run` on a synced project never imports the HTTP client, resolver or rich.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from . import __version__
from .errors import ExitCode, PypmError, UsageError, report_failure
from .fastpath import terminate_as_interrupt

if TYPE_CHECKING:  # pragma: no cover
    from .project import Project

__all__ = ["main", "build_parser", "Context"]

EPILOG = """\
exit codes:
  0    success
  1    a check said no (lock --check found the lock stale, sync --check found
       .venv out of sync, outdated found updates, verify found changes) or an
       unexpected internal error
  2    bad command line
  3    invalid pyproject.toml, pypm.lock or configuration
  4    no set of versions satisfies the requirements
  5    an index or file could not be fetched
  6    a hash, size or signature did not match
  7    the virtual environment could not be built or changed
  8    the sandbox could not be set up
  9    a plugin failed or could not be loaded
  10   a source build failed
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM)
  N    `pypm run`/`pypm shell` return the command's own exit status
       (128+signal when it was killed by a signal)

environment:
  PYPM_INDEX_URL   default index (after --index-url and [tool.pypm] index-url)
  PYPM_CACHE_DIR   cache directory (default: the user cache dir, e.g. ~/.cache/pypm)
  PYPM_OFFLINE     same as --offline when set to 1 (or true, yes, on)
  PYPM_ENV_FILE    dotenv files for run, shell and x when no --env-file is given
                   (separated by ':'); PYPM_NO_ENV_FILE=1 is --no-env-file
"""


class Context:
    """What every handler gets besides its arguments: where the project is and how loud to be."""

    def __init__(self, args: argparse.Namespace) -> None:
        try:
            self.directory = Path(args.directory).resolve() if args.directory else Path.cwd()
        except OSError as e:  # (the shell's directory was removed under it)
            raise UsageError(f"the current directory cannot be read: {e.strerror or e}",
                             hint="cd into an existing directory (or give one with --directory)") from None
        self._args = args
        self.member: str | None = None  # the workspace member this command runs in (see project())
        self.verbose: int = args.verbose
        self.quiet: bool = args.quiet
        if self.quiet:  # plugin messages too (only imported when asked: run's fast path stays lean)
            from . import plugins

            plugins.set_quiet(True)

    def project(self, *, own: bool = False) -> Project:
        """The project this command works on. In a workspace member's directory that is the
        workspace (its root's lock and .venv, as uv has it), and a command with a selection
        (sync, run, shell, export) selects the member unless --package/--all-packages say
        otherwise; `own`: the member's own project (build, publish, the file add/remove edit)."""
        from .editjournal import recover
        from .project import find_project_root, find_workspace, load_project

        root = find_project_root(self.directory)
        recover(self, root)  # what a killed `pypm add`/`remove` left here is rolled back first
        if not own:
            ws = find_workspace(root)
            if ws is not None:
                root, self.member = ws
                a = self._args
                if hasattr(a, "package") and not a.package and not getattr(a, "all_packages", False):
                    a.package = [self.member]
        return load_project(root)

    # One write per message (print writes the text and its newline apart): threads of a lock or a
    # sync (metadata builds, downloads) report at once, and two messages ran into one line.
    def info(self, msg: str) -> None:
        if not self.quiet:
            sys.stderr.write(msg + "\n")

    def debug(self, msg: str) -> None:
        if self.verbose:
            sys.stderr.write(msg + "\n")


# --------------------------------------------------------------------------- shared flag groups

def _given(value: str) -> str:
    """argparse `type` of every flag whose value names something: an empty one (`--python ""`,
    most often an unset shell variable) is refused, not taken as if the flag were not given."""
    if not value.strip():
        raise argparse.ArgumentTypeError("the value is empty (an unset shell variable?): give one, or leave the flag out")
    return value


def _offline_default() -> bool:
    from .config import env_flag

    return env_flag("PYPM_OFFLINE")


def _index_flags(p: argparse.ArgumentParser, *, strategy: bool = False) -> None:
    g = p.add_argument_group("index options")
    g.add_argument("--index-url", metavar="URL", type=_given, help="the primary package index (PEP 503/691 simple API)")
    g.add_argument("--extra-index-url", metavar="URL", type=_given, action="append", default=[],
                   help="another index to consult as well (repeatable)")
    g.add_argument("--find-links", "-f", metavar="DIR|URL", type=_given, action="append", default=[],
                   help="a flat directory or HTML page of distribution files (repeatable)")
    g.add_argument("--offline", action="store_true", default=_offline_default(),
                   help="use only what is cached; never touch the network")
    if strategy:
        g.add_argument("--index-strategy", choices=["first-index", "unsafe-best-match"], default=None,
                       help="first-index (default): a package comes only from the first index that has it, the "
                            "extra indexes asked before the primary; unsafe-best-match: every index's releases "
                            "together (as pip)")


def _selection_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to install")
    g.add_argument("--extra", metavar="NAME", type=_given, action="append", default=[],
                   help="include this optional-dependencies extra (repeatable)")
    g.add_argument("--all-extras", action="store_true", help="include every extra")
    g.add_argument("--no-dev", action="store_true", help="leave out the `dev` dependency group")
    g.add_argument("--group", metavar="NAME", type=_given, action="append", default=[],
                   help="include this dependency group as well (repeatable)")
    g.add_argument("--only-group", metavar="NAME", type=_given, action="append", default=[],
                   help="install only this group, not the project's dependencies (repeatable)")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--package", metavar="NAME", type=_given, action="append", default=[],
                   help="a workspace member: install it and its dependencies instead of the root's (repeatable)")
    w.add_argument("--all-packages", action="store_true", help="the root's selection and every workspace member")


def _sync_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("lock and environment")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--locked", action="store_true",
                   help="fail if pypm.lock does not match pyproject.toml instead of re-locking (for CI)")
    x.add_argument("--frozen", action="store_true", help="use pypm.lock as it is, without checking it is current")
    g.add_argument("--python", metavar="VERSION|PATH", type=_given, help="the interpreter for .venv (default: [tool.pypm] python, "
                   "else the newest on PATH that satisfies requires-python)")
    g.add_argument("--no-install-project", action="store_true", help="do not install the project itself")
    g.add_argument("--no-install-package", metavar="NAME", type=_given, action="append", default=[],
                   help="do not install this package, though the selection has it (repeatable; its dependencies "
                        "are installed)")
    g.add_argument("--link-mode", choices=["hardlink", "reflink", "copy"], default=None,
                   help="how files get from the cache into .venv (default: hardlink, else reflink, else copy)")
    g.add_argument("--compile", action="store_true", help="byte-compile installed Python files")
    g.add_argument("--offline", action="store_true", default=_offline_default(),
                   help="use only what is cached; never touch the network")


def _edit_flags(p: argparse.ArgumentParser) -> None:
    """What follows an edit of pyproject.toml (add, remove, version): lock and sync, or less."""
    x = p.add_mutually_exclusive_group()
    x.add_argument("--no-sync", action="store_true", help="update pypm.lock but leave .venv alone")
    x.add_argument("--frozen", action="store_true", help="only edit pyproject.toml: no lock, no sync")
    p.add_argument("--offline", action="store_true", default=_offline_default(),
                   help="use only what is cached; never touch the network")


def _env_file_flags(p: argparse.ArgumentParser) -> None:
    """run's, shell's and x's dotenv flags (pypm.run.env_file_vars; fastpath.env_file_names)."""
    p.add_argument("--env-file", metavar="PATH", type=_given, action="append", default=[],
                   help="set the NAME=VALUE variables of this dotenv file where the command's environment "
                        "does not have them (repeatable; later files win; else PYPM_ENV_FILE)")
    p.add_argument("--no-env-file", action="store_true",
                   help="read no dotenv file: neither --env-file nor PYPM_ENV_FILE (also PYPM_NO_ENV_FILE=1)")


def _sandbox_flags(p: argparse.ArgumentParser, *, print_plan: bool = True) -> None:
    g = p.add_argument_group("sandbox")
    g.add_argument("--no-sandbox", action="store_true", help="run directly on the host, without the sandbox")
    g.add_argument("--network", choices=["none", "host"], default=None,
                   help="`none` (default): loopback only; `host`: share the host's network")
    g.add_argument("--bind", metavar="SRC[:DST]", type=_given, action="append", default=[], help="bind SRC read-write")
    g.add_argument("--ro-bind", metavar="SRC[:DST]", type=_given, action="append", default=[], help="bind SRC read-only")
    g.add_argument("--env", metavar="NAME[=VALUE]", type=_given, action="append", default=[],
                   help="pass NAME from the host, or set it to VALUE (repeatable)")
    g.add_argument("--profile", metavar="NAME|PATH", type=_given, help="seccomp profile: `default`, `strict` or a JSON file")
    g.add_argument("--limit", metavar="NAME=VALUE", type=_given, action="append", default=[],
                   help="a resource limit (repeatable; over [tool.pypm.sandbox.limits]): memory=2G (address space "
                        "per process), cpu=600 (CPU seconds per process), processes=512 (in the whole sandbox), "
                        "open-files=1024, file-size=1G, tmp-size=1G (each tmpfs: /tmp, $HOME, /dev/shm, /dev); "
                        "NAME=unlimited drops the project's")
    w = g.add_mutually_exclusive_group()
    w.add_argument("--writable-project", dest="writable_project", action="store_true", default=None,
                   help="the project directory is writable inside the sandbox (default)")
    w.add_argument("--read-only-project", dest="writable_project", action="store_false",
                   help="the project directory is read-only inside the sandbox")
    if print_plan:
        g.add_argument("--print-sandbox", action="store_true", help="print the sandbox plan and exit")


# --------------------------------------------------------------------------- handlers

def _lazy(module: str, function: str, *, project: bool | str = False) -> Callable[[Context, argparse.Namespace], int]:
    """The handler of a command that calls `pypm.<module>.<function>(ctx, args)` (with `project`:
    `(ctx, ctx.project(), args)`; "own": a workspace member's own, not its workspace), importing
    the module only when that command runs: every command builds this parser, and no other
    command pays for a module's imports."""

    def handler(ctx: Context, args: argparse.Namespace) -> int:
        import importlib

        fn = getattr(importlib.import_module(f"{__package__}.{module}"), function)
        return int(fn(ctx, ctx.project(own=project == "own"), args) if project else fn(ctx, args))

    return handler


def cmd_init(ctx: Context, args: argparse.Namespace) -> int:
    if args.script:
        from .scaffold import init_script

        given = [flag for flag, value in (("PATH", args.path), ("--name", args.name), ("--lib", args.lib),
                                          ("--package", args.package), ("--build-backend", args.build_backend)) if value]
        if given:
            raise UsageError(f"--script FILE makes a script, not a project: {' and '.join(given)} "
                             f"{'does' if len(given) == 1 else 'do'} not apply")
        path = init_script(ctx.directory / args.script, python=args.python)
        ctx.info(f"created {path}: `pypm add --script {args.script} NAME` adds dependencies, "
                 f"`pypm run {args.script}` runs it")
        return ExitCode.OK
    from .scaffold import init_project

    if args.python:
        raise UsageError("--python goes with --script (a project's interpreter is [tool.pypm] python)")
    directory = Path(args.path).resolve() if args.path else ctx.directory
    from .project import nearest_workspace
    from .scaffold import default_name, join_workspace

    ws = None if args.no_workspace else nearest_workspace(directory)
    existed = directory.exists()
    kind = "lib" if args.lib else "package" if args.package else None
    if args.build_backend and kind is None:
        raise UsageError("--build-backend goes with --lib or --package (a virtual project is not built)")
    path = init_project(directory, name=args.name, kind=kind, backend=args.build_backend or "hatchling",
                        requires_python=ws.requires_python if ws is not None else None)
    done = None
    if ws is not None:
        try:
            done = join_workspace(ws, directory, args.name or default_name(directory))
        except BaseException:  # (a member of that name already, say): nothing of this init is left
            path.unlink(missing_ok=True)
            if not existed:
                directory.rmdir()
            raise
    ctx.info(f"created {path}")
    if done:
        ctx.info(done)
    return ExitCode.OK


def cmd_lock(ctx: Context, args: argparse.Namespace) -> int:
    from .locking import LockOptions, lock_project

    opts = LockOptions.from_args(args)
    return lock_project(ctx, ctx.project(), opts)


def cmd_sync(ctx: Context, args: argparse.Namespace) -> int:
    from .sync import SyncOptions, already_synced, sync_project

    if already_synced(ctx, args):  # no-op fast path: no project model, no lock parsing
        return ExitCode.OK
    rc = sync_project(ctx, ctx.project(), SyncOptions.from_args(args))
    # The process ends next: its final garbage collection would walk every object the sync made
    # (the lock, the interpreter's tags, the HTTP stack), 30-90 ms after a cold sync; frozen
    # objects are skipped. Exit handlers still run; only cyclic garbage goes uncollected, which
    # the process's end frees anyway (C, docs/performance.md).
    import gc

    gc.freeze()
    return rc


def cmd_include_dir(ctx: Context, args: argparse.Namespace) -> int:
    from .plugins.native import include_dir

    print(include_dir())
    return ExitCode.OK


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pypm",
        description="A Python package and project manager: PEP 621 projects, a hash-pinned universal lock, "
        "a verified wheel cache, and hermetic runs in an unprivileged namespace sandbox.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pypm {__version__}")
    parser.add_argument("-C", "--directory", metavar="DIR", type=_given, help="run as if started in DIR")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output; show tracebacks of errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Callable[[Context, argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(handler=handler)
        # -v/-q are accepted after the command too (`pypm sync -q`), as in uv; SUPPRESS keeps
        # the global value when they are not repeated here.
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    p = add("init", cmd_init, "create a pyproject.toml (PEP 621) with a [tool.pypm] table, or a PEP 723 script")
    p.add_argument("path", nargs="?", help="the project directory (default: the current one)")
    p.add_argument("--name", type=_given, help="the project name (default: the directory's name)")
    p.add_argument("--script", metavar="FILE", type=_given,
                   help="make FILE, a script with a PEP 723 `# /// script` block, instead of a project")
    p.add_argument("--python", metavar="3.X", type=_given, help="with --script: its requires-python floor")
    p.add_argument("--no-workspace", action="store_true",
                   help="inside a workspace, do not add the new project to its members")
    k = p.add_mutually_exclusive_group()
    k.add_argument("--lib", action="store_true",
                   help="an installable library: src/NAME/__init__.py and py.typed, with a [build-system]")
    k.add_argument("--package", action="store_true",
                   help="an installable application: src/NAME/__init__.py with main(), a [project.scripts] "
                        "command and a [build-system]")
    p.add_argument("--build-backend", choices=["hatchling", "setuptools", "flit-core", "pdm-backend"],  # scaffold.BACKENDS
                   help="with --lib or --package: its build backend (default: hatchling)")

    p = add("lock", cmd_lock, "resolve the project into a universal, hash-pinned pypm.lock")
    p.add_argument("--refresh", action="store_true", help="re-fetch metadata and hashes; ignore cached index pages")
    c = p.add_mutually_exclusive_group()
    c.add_argument("--check", action="store_true",
                   help="exit 1 if pypm.lock is missing or does not match pyproject.toml; write nothing")
    c.add_argument("--dry-run", action="store_true",
                   help="resolve and print what would change in pypm.lock (added, removed, other versions); "
                        "write nothing")
    u = p.add_mutually_exclusive_group()
    u.add_argument("--upgrade", "-U", action="store_true", help="allow every package to move to its newest version")
    u.add_argument("--upgrade-package", "-P", metavar="NAME", type=_given, action="append", default=[],
                   help="allow only NAME to move (repeatable)")
    p.add_argument("--prerelease", choices=["allow", "disallow", "if-necessary", "explicit",
                                            "if-necessary-or-explicit"], default=None,
                   help="when pre-releases may be chosen (default: if-necessary-or-explicit, as uv)")
    p.add_argument("--no-build", action="store_true", help="never use source distributions")
    p.add_argument("--no-binary", action="store_true", help="never use wheels (lock sdists only)")
    p.add_argument("--exclude-newer", metavar="DATE", type=_given, help="ignore files uploaded after DATE (RFC 3339 or YYYY-MM-DD)")
    p.add_argument("--from", dest="from_pylock", metavar="PYLOCK", type=_given, help="start from a PEP 751 pylock.toml")
    p.add_argument("--sign", metavar="KEY", type=_given, help="sign the lock's root with this Ed25519 private key file")
    _index_flags(p, strategy=True)

    for name, handler, text in (("add", _lazy("edit", "add_command"), "add requirements to pyproject.toml, then lock and sync"),
                                ("remove", _lazy("edit", "remove_command"), "remove requirements from pyproject.toml, then lock and sync")):
        p = add(name, handler, text)
        if name == "add":
            p.add_argument("requirements", nargs="*", metavar="REQUIREMENT",
                           help="PEP 508 requirements (NAME, NAME>=1.2, NAME[extra], a marker after ;), or the "
                                "path of a project directory, wheel or sdist (../lib)")
            p.add_argument("-r", "--requirements", dest="requirements_files", metavar="FILE", type=_given,
                           action="append", default=[],
                           help="also add every requirement of this pip requirements file (repeatable)")
        else:
            p.add_argument("packages", nargs="+", metavar="NAME", help="the names to remove")
        g = p.add_argument_group("which array of pyproject.toml (default: [project] dependencies)")
        g.add_argument("--dev", action="store_true", help="the `dev` dependency group (PEP 735), as --group dev")
        g.add_argument("--group", metavar="NAME", type=_given, help="the dependency group NAME (PEP 735)")
        g.add_argument("--optional", metavar="EXTRA", type=_given, help="the optional-dependencies extra EXTRA")
        g.add_argument("--script", metavar="FILE", type=_given,
                       help="the `dependencies` of FILE's PEP 723 `# /// script` block (made when missing)")
        if name == "add":
            p.add_argument("--raw", action="store_true",
                           help="write the requirement as given, without a lower bound at the locked version")
            p.add_argument("--editable", action="store_true",
                           help="a project directory given by path is installed editable ([tool.pypm.sources])")
        p.add_argument("--sign", metavar="KEY", type=_given,
                       help="sign the new lock with this Ed25519 private key (as `pypm lock --sign`)")
        _edit_flags(p)

    p = add("version", _lazy("edit", "version_command"), "show or set the project's version (then lock and sync, as add does)")
    p.add_argument("value", nargs="?", metavar="VERSION", help="the new version (PEP 440)")
    p.add_argument("--bump", metavar="PART", action="append", default=[],
                   choices=["major", "minor", "patch", "stable", "alpha", "beta", "rc", "post", "dev"],
                   help="raise a part instead: major, minor, patch, stable, alpha, beta, rc, post, dev "
                        "(repeatable, applied in order: --bump minor --bump beta)")
    p.add_argument("--short", action="store_true", help="print the version alone")
    p.add_argument("--dry-run", action="store_true", help="print the new version; change nothing")
    p.add_argument("--sign", metavar="KEY", type=_given,
                   help="sign the lock again with this Ed25519 private key (its signature covered the old version)")
    _edit_flags(p)

    p = add("tree", _lazy("tree", "tree_command", project=True), "draw the locked dependency graph as a tree")
    p.add_argument("--depth", "-d", metavar="N", type=int, help="draw N levels below the top (default: all)")
    p.add_argument("--invert", "-i", action="store_true",
                   help="draw what depends on each package instead (from the leaves, or from --package)")
    p.add_argument("--package", metavar="NAME", type=_given, action="append", default=[],
                   help="start from this package instead of the project (repeatable)")
    p.add_argument("--no-dedupe", action="store_true", help="draw a package's dependencies every time, not only the first")
    p.add_argument("--no-dev", action="store_true", help="leave out the `dev` dependency group")
    x = p.add_mutually_exclusive_group()
    x.add_argument("--locked", action="store_true", help="fail if pypm.lock does not match pyproject.toml instead of re-locking")
    x.add_argument("--frozen", action="store_true", help="use pypm.lock as it is, without checking it is current")
    p.add_argument("--offline", action="store_true", default=_offline_default(),
                   help="use only what is cached; never touch the network")

    p = add("export", _lazy("export", "export_project", project=True), "write the lock in another format (PEP 751 pylock.toml, requirements.txt)")
    p.add_argument("--format", choices=["pylock.toml", "requirements.txt"], default="pylock.toml",
                   help="PEP 751 pylock.toml (default) or a pip requirements file with --hash for every file")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write here (atomically) instead of standard output; a pylock must be named "
                   "pylock.toml or pylock.NAME.toml")
    _selection_flags(p)
    p.add_argument("--no-install-project", action="store_true", help="leave the project itself out")

    p = add("sync", cmd_sync, "make .venv hold exactly the locked set")
    _selection_flags(p)
    _sync_flags(p)
    p.add_argument("--inexact", action="store_true",
                   help="keep installed packages the selection does not ask for (a package of the lock is "
                        "still changed to its locked version)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (install/remove/replace) and change nothing")
    p.add_argument("--check", action="store_true",
                   help="as --dry-run, and exit 1 unless .venv is in sync with pypm.lock (which must be current)")
    p.add_argument("--reinstall", action="store_true",
                   help="reinstall every package, checking the cache's unpacked copies against their wheels first")

    for name, handler, text in (("run", _lazy("run", "run_command"), "run a command in the project's environment (a PEP 723 script in its own), sandboxed"),
                                ("shell", _lazy("run", "run_shell"), "an interactive shell in the project's environment, sandboxed")):
        p = add(name, handler, text)
        _selection_flags(p)
        _sync_flags(p)
        p.add_argument("--no-sync", action="store_true", help="do not sync .venv first")
        p.add_argument("--exact", action="store_true",
                       help="sync .venv to exactly this selection first, removing extras, groups and packages "
                            "it does not ask for (by default the extras and groups .venv was synced for and "
                            "packages another installer put there are kept)")
        p.add_argument("--upgrade", "-U", action="store_true",
                       help="lock again with every package at its newest version first (a PEP 723 script: "
                            "its environment), then sync")
        _env_file_flags(p)
        if name == "run":
            p.add_argument("--with", dest="with_", metavar="REQUIREMENT", type=_given, action="append", default=[],
                           help="also make this package importable, from an environment of its own layered over "
                                ".venv (repeatable; a PEP 723 script: added to its dependencies)")
            p.add_argument("--with-editable", dest="with_editable", metavar="PATH", type=_given, action="append",
                           default=[], help="as --with, for a project directory installed editable (repeatable)")
            p.add_argument("--with-requirements", dest="with_requirements", metavar="FILE", type=_given,
                           action="append", default=[], help="as --with, for each requirement of a pip requirements "
                                                             "file (repeatable)")
        _sandbox_flags(p)
        if name == "run":
            p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]",
                           help="the command (use -- before it if it starts with -)")

    p = add("x", _lazy("toolrun", "x_command"), "run a tool from the index in an environment of its own, sandboxed (as uvx)")
    p.add_argument("--from", dest="from_", metavar="REQUIREMENT", type=_given,
                   help="the package that provides the command (default: the command's name; NAME@VERSION pins it)")
    p.add_argument("--with", dest="with_", metavar="REQUIREMENT", type=_given, action="append", default=[],
                   help="install this package beside the tool (repeatable)")
    p.add_argument("--with-editable", dest="with_editable", metavar="PATH", type=_given, action="append", default=[],
                   help="install this project directory beside the tool, editable (repeatable)")
    p.add_argument("--with-requirements", dest="with_requirements", metavar="FILE", type=_given, action="append",
                   default=[], help="install the requirements of this pip requirements file beside the tool (repeatable)")
    p.add_argument("--upgrade", "-U", action="store_true",
                   help="move the tool's environment to the newest releases (it keeps its first resolution otherwise)")
    p.add_argument("--python", metavar="VERSION|PATH", type=_given, help="the interpreter for the tool's environment")
    _env_file_flags(p)
    _index_flags(p, strategy=True)
    _sandbox_flags(p)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]",
                   help="the command (use -- before it if it starts with -)")

    p = add("build", _lazy("build", "build_command", project="own"), "build the project's sdist and wheel (PEP 517) inside the sandbox")
    p.add_argument("--sdist", action="store_true", help="build the sdist")
    p.add_argument("--wheel", action="store_true", help="build the wheel")
    p.add_argument("-o", "--out-dir", metavar="DIR", default="dist", help="where to write (default: dist/)")

    p = add("publish", _lazy("publish", "publish_command"), "upload wheels and sdists (default: dist/*) to an index")
    p.add_argument("files", nargs="*", metavar="FILE", help="the files to upload (default: the project's dist/*)")
    p.add_argument("--publish-url", metavar="URL", type=_given,
                   help="the index's upload URL (else PYPM_PUBLISH_URL, [tool.pypm] publish-url)")
    p.add_argument("--token", metavar="TOKEN", type=_given, help="an API token (else PYPM_PUBLISH_TOKEN)")
    p.add_argument("--username", "-u", metavar="NAME", type=_given, help="else PYPM_PUBLISH_USERNAME")
    p.add_argument("--password", "-p", metavar="PASSWORD", type=_given, help="else PYPM_PUBLISH_PASSWORD")
    p.add_argument("--check-url", metavar="INDEX", type=_given,
                   help="a simple index to look at first: files it has with the same hash are skipped")
    p.add_argument("--dry-run", action="store_true", help="check the files and say what would be uploaded")
    p.add_argument("--trusted-publishing", choices=["auto", "always", "never"], default=None,
                   help="exchange the CI's OIDC identity (GitHub Actions) for an upload token: auto (the default, "
                        "else PYPM_TRUSTED_PUBLISHING): when no credentials are given and the job can ask for one")

    p = add("tool", _lazy("toolinstall", "tool_command"),
            "install command-line tools from the index on PATH, each in an environment of its own, run sandboxed (as uv tool)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help, description=help, epilog=EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        a.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        a.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return a

    a = action("install", "install a tool: its environment, and its commands in the bin directory, run sandboxed")
    a.add_argument("requirement", metavar="REQUIREMENT",
                   help="the tool's package, as a requirement (`ruff`, `black>=24`) or the path of its project, wheel or sdist")
    a.add_argument("--with", dest="with_", metavar="REQUIREMENT", type=_given, action="append", default=[],
                   help="also install this package in the tool's environment (repeatable)")
    a.add_argument("--with-editable", dest="with_editable", metavar="PATH", type=_given, action="append", default=[],
                   help="also install this project directory in the tool's environment, editable (repeatable)")
    a.add_argument("--with-requirements", dest="with_requirements", metavar="FILE", type=_given, action="append",
                   default=[], help="also install the requirements of this pip requirements file (repeatable)")
    a.add_argument("--python", metavar="VERSION|PATH", type=_given, help="the interpreter for the tool's environment")
    a.add_argument("--editable", "-e", action="store_true",
                   help="install the tool editable from its project directory (REQUIREMENT is its path): its sources stay live")
    a.add_argument("--reinstall", action="store_true",
                   help="reinstall every package of the tool's environment (a path's project is built again)")
    a.add_argument("--force", action="store_true", help="replace files in the bin directory that pypm did not put there")
    _index_flags(a, strategy=True)
    _sandbox_flags(a, print_plan=False)  # (written into the commands, which run `pypm x` with them)
    a = action("upgrade", "lock installed tools again to their newest releases, and sync them")
    a.add_argument("names", nargs="*", metavar="NAME", help="the tools to upgrade")
    a.add_argument("--all", action="store_true", help="every installed tool")
    a.add_argument("--offline", action="store_true", default=_offline_default(),
                   help="use only what is cached; never touch the network")
    a = action("uninstall", "remove installed tools: their commands and their environments")
    a.add_argument("names", nargs="+", metavar="NAME", help="the tools to remove")
    a = action("list", "list the installed tools, their versions and commands")
    a.add_argument("--show-paths", action="store_true", help="show where each tool and command is")
    a = action("dir", "print the directory of the tools' environments")
    a.add_argument("--bin", action="store_true", help="print the directory of their commands instead")
    # (never parsed: `tool run` is rewritten to `x` before the parser sees it; listed for --help)
    a = action("run", "run a tool, as `pypm x` (the same options), sandboxed: as uv tool run is uvx")
    a.add_argument("args", nargs=argparse.REMAINDER, metavar="[OPTIONS] COMMAND [ARGS...]",
                   help="as for `pypm x`")
    a = action("update-shell", "add the tools' bin directory to PATH in the shell's startup files")

    p = add("cache", _lazy("cache", "cache_command"), "inspect and clean the wheel cache")
    p.add_argument("action", choices=["dir", "clean", "prune"],
                   help="dir: print its path; clean: remove everything; prune: remove unused and partial entries")
    p.add_argument("--days", type=float, default=30.0, metavar="N",
                   help="prune: also remove entries not used for N days (default: 30)")

    add("plugins", _lazy("plugins", "list_command"), "list plugins found, where from, and which hooks each implements")
    add("include-dir", cmd_include_dir, "print the directory holding pypm_plugin.h (for native plugins)")

    p = add("verify", _lazy("verify", "verify_command", project=True), "check installed files and the lock against what they should be")
    p.add_argument("--venv", action="store_true", help="check every installed file against its wheel's Merkle tree")
    p.add_argument("--lock", action="store_true", help="check every locked file against what its index serves")

    p = add("keygen", _lazy("signing", "keygen_command"), "create an Ed25519 key pair for signing locks")
    p.add_argument("-o", "--output", metavar="PATH", default="pypm-signing-key",
                   help="private key path (the public key goes to PATH.pub)")

    p = add("outdated", _lazy("outdated", "outdated_command", project=True), "list locked packages with newer versions; exit 1 if any")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="a table for people (default) or JSON for programs")
    _index_flags(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .__main__ import tool_run_as_x
    from .config import env_flag
    from .fastpath import FLAGS

    argv = tool_run_as_x(list(sys.argv[1:] if argv is None else argv))

    try:
        # Every on/off environment variable, whatever the command (as PYPM_OFFLINE always was,
        # through the flag defaults): a value that is neither yes nor no stops pypm here, not only
        # the commands that get as far as reading it. The entry point's fast paths leave such a
        # run to this check (fastpath.flags_readable).
        for name in FLAGS:
            env_flag(name)
        parser = build_parser()
    except PypmError as e:  # a bad environment variable (PYPM_OFFLINE=maybe)
        return report_failure(e, verbose=0)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return ExitCode.USAGE
    try:
        ctx = Context(args)
    except PypmError as e:
        return report_failure(e, verbose=getattr(args, "verbose", 0))
    terminate_as_interrupt()
    try:
        return int(args.handler(ctx, args) or 0)
    except (Exception, KeyboardInterrupt) as e:  # one reporting policy: errors.report_failure
        return report_failure(e, verbose=ctx.verbose)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
