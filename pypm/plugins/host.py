"""The plugin host: find enabled plugins (plugin-path, then entry points), load them, call hooks."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ExitCode, PluginError
from . import STAGES, PackageInfo, quiet
from .context import HookContext

if TYPE_CHECKING:  # pragma: no cover
    from importlib.metadata import EntryPoint

    from ..project import Project

__all__ = ["GROUP", "RUN_STAGES", "LoadedPlugin", "find_plugin", "unload_all", "enabled_plugins", "fire_stage", "fetchers",
           "run_hook_record", "list_plugins"]

GROUP = "pypm.plugins"

# pypm's own plugins. pypm's pyproject.toml declares them as entry points too (so `pypm plugins`
# and other tools see them), but they are resolved here without scanning the installed
# distributions: importing importlib.metadata and the scan cost ~15 ms, which every `pypm run`
# of a project enabling them (the canary) would pay. So a built-in name is never shadowed by
# another distribution's entry point; a `pypm_<name>.so` on plugin-path still comes first.
BUILTIN = {"auditwheel": "pypm.plugins.auditwheel:plugin", "s3cache": "pypm.plugins.s3cache:plugin"}


@dataclass
class LoadedPlugin:
    name: str
    kind: str  # "python" | "native"
    origin: str  # "entry point NAME = VALUE (dist X Y)" or the .so path
    hooks: tuple[str, ...]  # the stages it implements, plus "fetch" for a wheel fetcher
    obj: Any  # the entry point's object, or a nativehost.HostedPlugin


# ---------------------------------------------------------------- discovery

@functools.cache
def _entry_points() -> dict[str, "EntryPoint"]:
    # One scan of installed distributions per process; the first of two same-named wins
    # (sys.path order), as for console scripts.
    from importlib.metadata import entry_points

    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


def _search_dirs(project: "Project") -> list[Path]:
    return [(project.root / d).resolve() for d in project.tool.plugin_path]


def _python_hooks(obj: Any) -> tuple[str, ...]:
    """Stages a Python plugin implements: methods named after them, else `hooks`, else all."""
    methods = tuple(st for st in STAGES if callable(getattr(obj, st.replace("-", "_"), None)))
    if methods:
        hooks = methods
    elif callable(obj):
        hooks = tuple(getattr(obj, "hooks", STAGES))
    else:
        hooks = ()
    if callable(getattr(obj, "fetch_wheel", None)):
        hooks += ("fetch",)
    return hooks


_loaded: dict[tuple[str, str], LoadedPlugin] = {}


def unload_all() -> None:
    """Forget every loaded plugin and end the native plugins' host processes (they start again,
    with the environment of then, on next use). One pypm command never needs this; a process
    that runs several (the tests) does."""
    for plugin in _loaded.values():
        if plugin.kind == "native":
            plugin.obj.close()
    _loaded.clear()


def _load_entry_point(name: str, ep: "EntryPoint") -> LoadedPlugin:
    dist = getattr(ep, "dist", None)
    where = f"entry point `{name} = {ep.value}` in group {GROUP}"
    if dist is not None:
        where += f" (from {dist.name} {dist.version})"
    try:
        obj = ep.load()
    except Exception as e:  # an import error in third-party code: name it, do not crash pypm
        raise PluginError(f"plugin {name} could not be loaded from {where}: {type(e).__name__}: {e}",
                          hint=f"install the plugin's dependencies, or remove {name!r} from [tool.pypm] plugins") from e
    hooks = _python_hooks(obj)
    declared = getattr(obj, "hooks", None) if callable(obj) else None
    unknown = sorted(set(declared or ()) - set(STAGES)) if not isinstance(declared, str) else [declared]
    if unknown:
        raise PluginError(f"plugin {name} ({where}) declares unknown hook(s) {', '.join(map(repr, unknown))}",
                          hint=f"`hooks` is a tuple of stage names: {', '.join(STAGES)}")
    if not hooks:
        raise PluginError(f"plugin {name} ({where}) is neither callable nor has hook methods",
                          hint="an entry point must name a function taking the context, or an object with "
                               "methods such as post_sync(ctx)")
    return LoadedPlugin(name, "python", where, hooks, obj)


def _load_builtin(name: str) -> LoadedPlugin:
    import importlib

    value = BUILTIN[name]
    module, _, attr = value.partition(":")
    where = f"entry point `{name} = {value}` in group {GROUP} (built into pypm)"
    try:
        obj = getattr(importlib.import_module(module), attr)
    except Exception as e:  # e.g. a broken install of pypm itself
        raise PluginError(f"plugin {name} could not be loaded from {where}: {type(e).__name__}: {e}",
                          hint="reinstall pypm") from e
    return LoadedPlugin(name, "python", where, _python_hooks(obj), obj)


def find_plugin(project: "Project", name: str) -> LoadedPlugin:
    """Find and load one plugin by name: `pypm_<name>.so` on plugin-path first, then entry points."""
    dirs = _search_dirs(project)
    for d in dirs:
        so = d / f"pypm_{name}.so"
        if so.is_file():
            key = ("native", str(so))
            if key not in _loaded:
                from . import nativehost

                nat = nativehost.start(name, so)  # in a process of its own: a crash is reported, not fatal
                _loaded[key] = LoadedPlugin(name, "native", str(so), nat.stages, nat)
            return _loaded[key]
    if name in BUILTIN:
        key = ("python", f"{name}={BUILTIN[name]}")
        if key not in _loaded:
            _loaded[key] = _load_builtin(name)
        return _loaded[key]
    ep = _entry_points().get(name)
    if ep is not None:
        key = ("python", f"{name}={ep.value}")
        if key not in _loaded:
            _loaded[key] = _load_entry_point(name, ep)
        return _loaded[key]
    looked = ", ".join(str(d / f"pypm_{name}.so") for d in dirs) or "nowhere ([tool.pypm] plugin-path is empty)"
    known = ", ".join(sorted(_entry_points())) or "none"
    raise PluginError(
        f"plugin {name} not found: looked for an entry point named {name!r} in group {GROUP} "
        f"(installed: {known}) and for a native plugin at {looked}",
        hint=f"install a distribution that provides it, build pypm_{name}.so into a [tool.pypm] plugin-path "
             f"directory, or remove {name!r} from [tool.pypm] plugins in {project.pyproject}",
    )


def enabled_plugins(project: "Project") -> list[LoadedPlugin]:
    return [find_plugin(project, n) for n in project.tool.plugins]


# ---------------------------------------------------------------- what `pypm run` needs to know

RUN_STAGES = ("pre-run", "post-run")


def _identity(path: Any) -> list[Any]:
    # [path, size, mtime_ns], or [path, None, None] when absent: what run.fast_main compares
    # with one stat each (a replaced or newly appearing file changes it).
    import os

    try:
        st = os.stat(path)
    except OSError:
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns]


def _module_file(obj: Any) -> str | None:
    mod = sys.modules.get(getattr(obj, "__module__", None) or "")
    return getattr(mod, "__file__", None)


def run_hook_record(project: "Project") -> dict[str, Any]:
    """Which enabled plugins implement a run stage (`run-hooks`), and the identity of every file
    that decided which plugin a name loads and what it implements (`files`): each candidate
    `pypm_<name>.so` on plugin-path up to the one used (absent ones too: one appearing later
    shadows what was found), a native plugin's file, a Python plugin's module file and the
    dist-info its entry point comes from. Kept in state.json at sync time, so `pypm run`'s fast
    path can skip loading plugins while none has a run hook and no file changed.
    Raises PluginError as `find_plugin` does."""
    import os

    dirs = _search_dirs(project)
    files: list[list[Any]] = []
    run_hooks: list[str] = []
    third_party = False
    for name in project.tool.plugins:
        plugin = find_plugin(project, name)
        for d in dirs:
            so = d / f"pypm_{name}.so"
            files.append(_identity(so))
            if plugin.kind == "native" and str(so) == plugin.origin:
                break
        if plugin.kind == "python":
            # A native plugin declares its stages (pypm_plugin_stages; none declared = all, so a
            # single pypm_hook that receives every stage counts as a run hook); a Python one's
            # come from its methods or `hooks` (host._python_hooks).
            mod = _module_file(plugin.obj)
            if mod is None:
                return {"run-hooks": None, "files": []}  # cannot tell when it changes: never skip it
            files.append(_identity(mod))
            if name not in BUILTIN:
                third_party = True
                dist_path = getattr(getattr(_entry_points().get(name), "dist", None), "_path", None)
                if dist_path is None:
                    return {"run-hooks": None, "files": []}
                files.append(_identity(dist_path))
        if set(plugin.hooks) & set(RUN_STAGES):
            run_hooks.append(name)
    rec: dict[str, Any] = {"run-hooks": run_hooks, "files": files}
    if third_party:  # entry points are found on sys.path: another PYTHONPATH may find another plugin
        rec["pythonpath"] = os.environ.get("PYTHONPATH")
    return rec


# ---------------------------------------------------------------- calling hooks

def _path(p: Any) -> Path | None:
    return None if p is None else Path(p).absolute()


def _context(project: "Project", plugin: LoadedPlugin, stage: str, venv: Any, lock_path: Any, interpreter: Any,
             packages: tuple[PackageInfo, ...]) -> HookContext:
    return HookContext(stage=stage, plugin_name=plugin.name, project_root=project.root.absolute(),
                       venv=_path(venv), lock_path=_path(lock_path), interpreter=_path(interpreter),
                       packages=packages, config=dict(project.tool.plugin_config.get(plugin.name, {})),
                       project=project, quiet=quiet())


def _failure(plugin: LoadedPlugin, stage: str, reason: str, project_root: Path) -> PluginError:
    return PluginError(f"plugin {plugin.name} failed at {stage}: {reason}",
                       hint=f"see the plugin's messages above ({plugin.origin}); to go on without it, remove "
                            f"{plugin.name!r} from [tool.pypm] plugins in {project_root / 'pyproject.toml'}")


def _call_python(plugin: LoadedPlugin, ctx: HookContext) -> None:
    fn = getattr(plugin.obj, ctx.stage.replace("-", "_"), None)
    if not callable(fn):
        fn = plugin.obj
    try:
        rc = fn(ctx)
    except PluginError as e:  # the plugin's own, deliberate refusal: its message is the reason
        raise _failure(plugin, ctx.stage, e.message + (f" ({e.hint})" if e.hint else ""), ctx.project_root) from e
    except SystemExit as e:  # sys.exit() in a hook means "stop", not "end pypm with my status"
        raise _failure(plugin, ctx.stage, ctx.messages[-1] if ctx.messages else f"it called sys.exit({e.code!r})",
                       ctx.project_root) from e
    except Exception as e:
        raise _failure(plugin, ctx.stage, f"{type(e).__name__}: {e}", ctx.project_root) from e
    # None, True and 0 mean "go on"; False or any other int means stop. (Checked with `is`
    # first: False == 0 in Python.) Other return values carry no verdict.
    if rc is None or rc is True:
        return
    if rc is False or (isinstance(rc, int) and rc != 0):
        reason = ctx.messages[-1] if ctx.messages else f"its hook returned {rc!r}"
        raise _failure(plugin, ctx.stage, reason, ctx.project_root)


def fire_stage(project: "Project", stage: str, *, venv: Any, lock_path: Any, interpreter: Any,
               packages: tuple[PackageInfo, ...]) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown plugin stage {stage!r}")  # a bug at the call site, not user input
    # All are found and loaded before any runs, so a typo fails before any hook does work.
    for plugin in enabled_plugins(project):
        if stage not in plugin.hooks:
            continue
        ctx = _context(project, plugin, stage, venv, lock_path, interpreter, packages)
        if plugin.kind == "python":
            _call_python(plugin, ctx)
            continue
        rc, last = plugin.obj.call(
            stage, project_root=str(ctx.project_root), venv=_s(ctx.venv), lock_path=_s(ctx.lock_path),
            interpreter=_s(ctx.interpreter), config=ctx.config, packages=packages, report=ctx.report)
        if rc != 0:
            raise _failure(plugin, stage, last or f"pypm_hook returned {rc}", ctx.project_root)


def _s(p: Path | None) -> str | None:
    return None if p is None else str(p)


def fetchers(project: "Project") -> list[Callable[[str, str, Path], bool]]:
    out: list[Callable[[str, str, Path], bool]] = []
    for plugin in enabled_plugins(project):
        if "fetch" not in plugin.hooks:
            continue
        out.append(_make_fetcher(project, plugin))
    return out


def _make_fetcher(project: "Project", plugin: LoadedPlugin) -> Callable[[str, str, Path], bool]:
    def fetch(sha256: str, filename: str, dest: Path) -> bool:
        ctx = _context(project, plugin, "fetch", None, None, None, ())
        try:
            return bool(plugin.obj.fetch_wheel(ctx, sha256, filename, Path(dest)))
        except Exception as e:
            # A cache that is down must not stop a sync the index can serve: say so, fall back.
            ctx.report(f"could not fetch {filename}: {type(e).__name__}: {e}; using the index")
            Path(dest).unlink(missing_ok=True)
            return False

    fetch.__qualname__ = f"fetch_wheel[{plugin.name}]"
    return fetch


# ---------------------------------------------------------------- `pypm plugins`

def list_plugins(ctx: Any, args: Any) -> int:
    from ..errors import ProjectError

    out = sys.stdout
    project = None
    try:
        project = ctx.project()
    except ProjectError as e:
        print(f"(no project: {e.message})", file=out)
    rc = ExitCode.OK
    shown: set[str] = set()
    if project is not None:
        where = f"{project.pyproject} [tool.pypm] plugins"
        print(f"enabled ({where}):" if project.tool.plugins else f"enabled: none ({where} is empty)", file=out)
        for name in project.tool.plugins:
            shown.add(name)
            try:
                p = find_plugin(project, name)
            except PluginError as e:
                print(f"  {name}: NOT AVAILABLE: {e.message}", file=out)
                rc = ExitCode.PLUGIN
                continue
            _print_plugin(p, out)
        dirs = _search_dirs(project)
        print("plugin-path: " + (", ".join(map(str, dirs)) or "(empty)"), file=out)
        for d in dirs:
            for so in sorted(d.glob("pypm_*.so")) if d.is_dir() else ():
                name = so.name[len("pypm_"):-len(".so")]
                if name not in shown:
                    shown.add(name)
                    print(f"  {name} (not enabled): native, {so}", file=out)
    print(f"entry points in group {GROUP}:", file=out)
    for name, ep in sorted(_entry_points().items()):
        dist = getattr(ep, "dist", None)
        src = f" (from {dist.name} {dist.version})" if dist is not None else ""
        tag = "" if name in shown else " (not enabled)"
        if name in shown:
            print(f"  {name} = {ep.value}{src}", file=out)
            continue
        try:
            hooks = ", ".join(_load_entry_point(name, ep).hooks)
        except PluginError as e:
            hooks = f"cannot load: {e.message}"
        print(f"  {name}{tag} = {ep.value}{src}; hooks: {hooks}", file=out)
    return rc


def _print_plugin(p: LoadedPlugin, out: Any) -> None:
    print(f"  {p.name}: {p.kind}, {p.origin}", file=out)
    print(f"    hooks: {', '.join(p.hooks) or '(none)'}", file=out)
