"""Glue between pypm and the sandbox: a Project plus command-line flags become a sandbox Policy.

`[tool.pypm.sandbox]` gives the defaults, flags override them (lists add up). Relative
paths in pyproject.toml are taken from the project root, relative paths on the command
line from the current directory. Kept light: `pypm run` imports this on its hot path.
"""

from __future__ import annotations

import os

from .errors import SandboxError

TYPE_CHECKING = False  # not from typing (~2 ms): annotations are strings here, and this is run's hot path
if TYPE_CHECKING:  # pragma: no cover - run's hot path imports none of these
    import argparse
    from pathlib import Path
    from typing import Any, Sequence

    from sandbox.policy import Policy

__all__ = ["build_policy", "check_flags", "run_sandboxed"]


def _err(e: Any) -> SandboxError:
    """sandbox.SandboxError (the sandbox stands alone) -> pypm's SandboxError, same exit code."""
    err = SandboxError(e.message, hint=e.hint)
    err.exit_code = e.exit_code
    return err


def _project_facts(ctx: Any, project: Any, venv: Path | str,
                   known: tuple[str, dict[str, Any]] | None = None) -> tuple[Any, str, Any, Any]:
    """(root, name, sandbox settings, pyproject path) of the project.

    On `pypm run`'s fast path the project model is not loaded (validating every requirement
    costs tens of milliseconds). The settings then come from the venv's state.json, which
    `pypm sync` wrote from the validated project and which run's fast path has just matched
    against pyproject.toml's hash; a state file from an older pypm makes us read (and
    validate) only `[tool.pypm.sandbox]`; anything unexpected falls back to the full model,
    whose errors name the problem properly. `known`: (root, state.json's "tool") when the
    caller (run.fast_main) has found and matched them already.
    """
    if project is None and known is not None:
        facts = _from_tool(known[1])
        if facts is not None:
            return known[0], facts[0], facts[1], os.path.join(known[0], "pyproject.toml")
    if project is None:
        from pathlib import Path

        start = Path(ctx.directory).resolve()
        root = next((d for d in (start, *start.parents) if (d / "pyproject.toml").is_file()), start)
        path = root / "pyproject.toml"
        facts = _from_state(venv) or _from_pyproject(path)
        if facts is not None:
            return root, facts[0], facts[1], path
        project = ctx.project()
    return project.root, project.name, project.tool.sandbox, project.pyproject


def _from_state(venv: Path | str) -> tuple[str, Any] | None:
    from pathlib import Path

    from .venvstate import read_state

    return _from_tool((read_state(Path(venv)) or {}).get("tool"))


class _Settings:
    """[tool.pypm.sandbox] as state.json recorded it (the attributes of project.SandboxSettings)."""

    def __init__(self, sb: dict[str, Any]) -> None:
        self.network, self.profile, self.writable_project = sb["network"], sb["profile"], sb["writable-project"]
        self.bind, self.ro_bind, self.env = tuple(sb["bind"]), tuple(sb["ro-bind"]), tuple(sb["env"])
        # Required: a state.json from before limits existed must not read as "no limits" (it
        # makes the caller read [tool.pypm.sandbox] from pyproject.toml instead).
        self.limits = tuple(sorted((str(k), int(v)) for k, v in sb["limits"].items()))


def _from_tool(tool: Any) -> tuple[str, Any] | None:
    sb = tool.get("sandbox") if isinstance(tool, dict) else None
    if not isinstance(sb, dict) or not isinstance(tool.get("name"), str):
        return None
    try:
        cfg = _Settings(sb)
    except (KeyError, TypeError):
        return None
    return tool["name"], cfg


def _from_pyproject(path: Path) -> tuple[str, Any] | None:
    import tomllib

    from .project import _parse_sandbox

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        name = data["project"]["name"]
        tool = (data.get("tool") or {}).get("pypm") or {}
        if isinstance(name, str) and isinstance(tool, dict):
            return name, _parse_sandbox(tool.get("sandbox"), path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _within(path: str, dirs: list[str]) -> bool:
    """`path` is one of `dirs` or below one of them."""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def check_flags(ctx: Any, args: argparse.Namespace) -> None:
    """Refuse malformed sandbox flags of the command line before a lock or sync starts.

    build_policy checks them all again (with the project's settings) just before the run; this
    only says a typo (`--limit memroy=2G`, `--bind` of a path that does not exist, an unknown
    `--profile`) in a second rather than after a minute of sync that then runs nothing. Only
    what needs no project: the project's own settings are checked when pyproject.toml is read.
    """
    import sandbox
    from sandbox.host import resolve_bind
    from sandbox.policy import check_limits, filter_env

    cwd = str(ctx.directory)
    try:
        for what, attr in (("--bind", "bind"), ("--ro-bind", "ro_bind")):
            for spec in getattr(args, attr, None) or []:
                resolve_bind(spec, base=cwd, what=what)
        filter_env({}, getattr(args, "env", None) or ())  # (each --env item's form)
        if getattr(args, "profile", None) is not None:
            _profile(args.profile, cwd)
        check_limits(_limits((), args).items())
    except sandbox.SandboxError as e:
        raise _err(e) from None


def _profile(profile: str, base: str) -> str:
    """The seccomp profile `profile` names, a path taken from `base` (or a profile's name), once
    it is known to exist (sandbox.seccomp.profile_path: an unknown name or a missing file fails)."""
    from sandbox.seccomp import profile_path

    if "/" in profile or profile.endswith(".json"):
        profile = os.path.join(base, os.path.expanduser(profile))
    profile_path(profile)
    return profile


def _limits(base: Any, args: argparse.Namespace) -> dict[str, int]:
    """`base` (the project's limits) with each --limit over it; NAME=unlimited: none."""
    from sandbox.policy import limits_with

    try:
        return limits_with(base, getattr(args, "limit", None) or ())
    except ValueError as e:
        raise SandboxError(f"--limit {e}", hint="e.g. --limit memory=2G --limit cpu=600 --limit processes=512") from None


def build_policy(ctx: Any, project: Any, venv: Path | str, env: dict[str, str], args: argparse.Namespace,
                 *, shell: bool = False, known: tuple[str, dict[str, Any]] | None = None,
                 overlay: tuple[str, str] | None = None) -> Policy:
    """The policy for running a command of `project` (None: not loaded) with `venv`. `overlay`:
    `run --with`'s environment and its site-packages (run._with_environment), layered on."""
    from sandbox.host import caller, interpreter_prefixes, link_in, pth_paths, resolve_bind
    from sandbox.policy import python_policy

    root_path, name, cfg, pyproject = _project_facts(ctx, project, venv, known)
    root = str(root_path)
    cwd_host = str(ctx.directory)
    network = getattr(args, "network", None) or cfg.network
    writable = cfg.writable_project if getattr(args, "writable_project", None) is None else args.writable_project
    binds = [resolve_bind(b, base=root, what=f"{pyproject}: [tool.pypm.sandbox] bind") for b in cfg.bind]
    binds += [resolve_bind(b, base=cwd_host, what="--bind") for b in getattr(args, "bind", None) or []]
    ro_binds = [resolve_bind(b, base=root, what=f"{pyproject}: [tool.pypm.sandbox] ro-bind")
                for b in cfg.ro_bind]
    ro_binds += [resolve_bind(b, base=cwd_host, what="--ro-bind") for b in getattr(args, "ro_bind", None) or []]
    # an unknown name or a missing file fails here, before anything starts
    given = getattr(args, "profile", None)
    profile = _profile(given, cwd_host) if given is not None else _profile(cfg.profile, root)

    who = caller(env)
    real_venv = os.path.realpath(venv)
    real_root = os.path.realpath(root)
    # Work where the user is when that is inside the project (or a bind); else at the root.
    cwd = os.path.realpath(cwd_host)
    visible = [real_root] + [d for _, d in binds + ro_binds]
    if not _within(cwd, visible):
        cwd = real_root
    # A symlink inside a tree the sandbox can write may have been planted by an earlier
    # sandboxed command: a bind source resolved through one would let it choose what this run
    # binds in (its ~/.ssh). Refused for binds, skipped for .pth entries (host.link_in).
    untrusted = ([real_root] if writable else []) + [s for s, _ in binds]
    for spec, base, what in ([(b, root, "[tool.pypm.sandbox] bind/ro-bind") for b in (*cfg.bind, *cfg.ro_bind)]
                             + [(b, cwd_host, "--bind/--ro-bind") for b in (*(getattr(args, "bind", None) or []),
                                                                            *(getattr(args, "ro_bind", None) or []))]):
        link = link_in(os.path.join(base, os.path.expanduser(spec.partition(":")[0])), untrusted)
        if link is not None:
            raise SandboxError(f"{what} {spec}: the way there goes through the symlink {link}, which a sandboxed "
                               "command can write (it could point it anywhere)",
                               hint="bind the link's target path directly, or make the project read-only")
    # Path dependencies installed editable (`../lib/src` in a .pth file) must be importable.
    ro_binds += [(p, p) for p in pth_paths(real_venv, untrusted) if not _within(p, visible)]
    # .git read-only: a hook written into .git/hooks would run outside the sandbox at the
    # user's next commit. `--bind .git` still makes it writable (a later bind wins).
    git = os.path.join(real_root, ".git")
    protect = [git] if writable and os.path.lexists(git) and not os.path.islink(git) else []
    # .venv as a symlink in a writable project: the command could point it at a venv of its
    # own whose state.json says "sandbox-enabled": false, and the next run would trust it.
    dot_venv = os.path.join(real_root, ".venv")
    if writable and os.path.islink(dot_venv):
        raise SandboxError(f"{dot_venv} is a symlink inside the writable project: a sandboxed command could point "
                           "it at another venv, which the next run would trust",
                           hint="make .venv a directory (pypm sync recreates it), or run with --read-only-project")
    # pyproject.toml read-only too: it holds [tool.pypm.sandbox] (enabled, bind, network), which
    # decides the next run's sandbox; a command that could write it could turn the sandbox off.
    # pypm.lock likewise: its URLs and hashes decide what the next `pypm sync` installs, outside
    # the sandbox, into a venv the user may also run unsandboxed.
    for control in ("pyproject.toml", "pypm.lock"):
        path = os.path.join(real_root, control)
        if writable and os.path.isfile(path) and not os.path.islink(path):
            protect.append(path)
    if overlay:
        ro_binds.append((overlay[0], overlay[0]))  # in pypm's cache, made by pypm: read-only inside
        # and its editables' sources (`run --with-editable`), as the venv's above
        ro_binds += [(p, p) for p in pth_paths(os.path.realpath(overlay[0]), untrusted)
                     if not _within(p, visible) and (p, p) not in ro_binds]
    limits = _limits(cfg.limits, args)  # --limit NAME=VALUE, over the project's
    extra_env = list(cfg.env) + list(getattr(args, "env", None) or [])
    if shell and "PS1" not in env:  # a prompt that says where you are, in the shell's own syntax
        if os.path.basename(env.get("SHELL", "")) == "zsh":
            extra_env.append(f"PS1=({name}) [sandbox] %~ %# ")
        else:
            extra_env.append(f"PS1=({name}) [sandbox] \\w \\$ ")
    policy = python_policy(
        uid=who.uid, gid=who.gid, user=who.user, home=who.home, shell=who.shell, host_env=env,
        interpreter_prefixes=interpreter_prefixes(venv=real_venv),
        venv=real_venv, project=real_root, writable_project=writable, cwd=cwd, network=network,
        binds=binds, ro_binds=ro_binds, env=extra_env, profile=profile, protect=protect, limits=limits,
    )
    from .run import env_file_vars

    file_vars = env_file_vars(ctx, args)  # --env-file's (read once per command): only where unset
    if file_vars or overlay:
        from sandbox.record import replace

        inside = dict(policy.env)
        for var, value in (file_vars or {}).items():
            inside.setdefault(var, value)
        if overlay:  # as run._layer does outside: its packages first, its commands after the venv's
            from .run import _layer

            _layer(inside, real_venv, overlay[0], overlay[1])
        policy = replace(policy, env=tuple(sorted(inside.items())))
    return policy


def run_sandboxed(ctx: Any, project: Any, venv: Path | str, argv: Sequence[str], env: dict[str, str],
                  args: argparse.Namespace, *, known: tuple[str, dict[str, Any]] | None = None,
                  launch_flags: Sequence[str] | None = None,
                  own: tuple[str, Sequence[str], Sequence[str]] | None = None,
                  overlay: tuple[str, str] | None = None, vouch: Sequence[str] = ()) -> int:
    """Run `argv` in the project's sandbox; returns its exit status (128+N if killed by signal N).

    `env` is the environment the command would get unsandboxed (the venv activated); only
    its allowlisted part and what `--env`/`[tool.pypm.sandbox] env` ask for go in.
    `launch_flags`: run's fast path (with `known`) asks for the policy to be recorded for
    pypm.launch to replay, for `pypm run` with these flags; `own`: it is a command in an
    environment of its own, a PEP 723 script's or `pypm x`'s (see launch.record).
    """
    import sandbox

    shell = getattr(args, "command", None) == "shell"
    try:
        policy = build_policy(ctx, project, venv, env, args, shell=shell, known=known, overlay=overlay)
        if getattr(args, "print_sandbox", False):
            print(policy.to_text())
            print("command:    " + " ".join(argv))
            return 0
        # sandbox's default cache dir is pypm.config.cache_dir() on Linux (PYPM_CACHE_DIR, else
        # XDG_CACHE_HOME/pypm, else ~/.cache/pypm), without pypm.config's configparser import.
        from sandbox.cachedir import default_cache_dir

        ctx.debug(f"sandbox: {' '.join(argv)} (network {policy.network}, seccomp {policy.seccomp})")
        if launch_flags is not None and known is not None:
            from .launch import record

            record(known[0], str(venv), launch_flags, policy, known[1], default_cache_dir(), own, vouch)
        return sandbox.run(policy, list(argv), cache_dir=default_cache_dir())
    except sandbox.SandboxError as e:
        raise _err(e) from None
