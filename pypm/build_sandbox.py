"""The sandbox a PEP 517 hook runs in: a pyproject_hooks runner that executes inside `sandbox`.

pyproject_hooks runs each hook as `python _in_process.py HOOK CONTROL_DIR` through a
"subprocess runner" callable. Ours maps every host path of that command into a fixed
place inside a new root and runs it with `sandbox.run`:

    /build/env       the build venv (read-only; hard links into the verified wheel cache)
    /build/src/NAME  an unpacked sdist (read-write); the project is bound at its real path
                     instead, because an editable wheel must point at where the code is
                     (its .venv and .git read-only)
    /build/out       where the hook writes its wheel/sdist (read-write)
    /build/control   pyproject_hooks' input.json/output.json (read-write)
    /build/hooks     pyproject_hooks' _in_process.py (read-only)
    /tmp, $HOME      fresh tmpfs (HOME=/build/home)

plus the system directories and the interpreter's prefix read-only (sandbox.policy). No
network (a private net namespace with only `lo`) unless the package is allowed it; a clean,
fixed environment (SOURCE_DATE_EPOCH, TZ=UTC, LC_ALL=C.UTF-8, PYTHONHASHSEED=0, umask 022).
Fixed paths are what make a build reproducible: compilers record the working directory
and include paths in debug info, so two builds from two temporary directories would differ.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from .errors import SandboxError

if TYPE_CHECKING:  # pragma: no cover
    from sandbox.policy import Policy

__all__ = ["BuildBox", "ENV_INSIDE", "OUT_INSIDE", "SRC_INSIDE", "hook_runner", "MIN_EPOCH"]

ENV_INSIDE = "/build/env"
OUT_INSIDE = "/build/out"
SRC_INSIDE = "/build/src"
CONTROL_INSIDE = "/build/control"
HOOKS_INSIDE = "/build/hooks/_in_process.py"
HOME_INSIDE = "/build/home"
# ZIP cannot store dates before 1980-01-01; wheel writers refuse or clamp earlier epochs.
MIN_EPOCH = 315532800

Runner = Callable[..., None]


@dataclass
class BuildBox:
    """Where one build's trees are on the host and inside, and what the build may do."""

    source: Path  # host: the source tree (read-write)
    source_inside: str  # inside: where it is bound
    env_dir: Path  # host: the build venv (read-only)
    out_dir: Path  # host: the hook's output directory (read-write)
    log_path: Path  # host: the backend's stdout+stderr go here (outside every bind)
    source_date_epoch: int = MIN_EPOCH
    network: bool = False
    cache_dir: str | None = None  # the seccomp program cache
    runs: list[str] = field(default_factory=list)  # hook names run, in order (for messages and tests)
    # Host paths inside `source` that stay read-only (the project's .venv and .git): a build of
    # the project may write its tree, not the environment it is being installed into.
    protect: tuple[str, ...] = ()
    limits: tuple[tuple[str, int], ...] = ()  # [tool.pypm.build] limits: (name, value), as sandbox.policy.LIMITS

    def inside(self, host_path: str) -> str:
        """A host path under one of the bound trees -> the same path inside the sandbox."""
        for host, inside in ((str(self.source), self.source_inside), (str(self.out_dir), OUT_INSIDE),
                             (str(self.env_dir), ENV_INSIDE)):
            if host_path == host or host_path.startswith(host.rstrip("/") + "/"):
                return inside + host_path[len(host):]
        return host_path


def _environment(box: BuildBox, extra: Mapping[str, str]) -> list[str]:
    """NAME=VALUE entries: the build's whole environment besides what python_policy sets."""
    env = {
        "PATH": f"{ENV_INSIDE}/bin:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": ENV_INSIDE,
        "SOURCE_DATE_EPOCH": str(box.source_date_epoch),
        "PYTHONHASHSEED": "0",  # set iteration order in setup.py code ends up in file lists
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PIP_NO_INDEX": "1",  # a backend that shells out to pip gets no index (and no network)
        "PIP_CONFIG_FILE": os.devnull,
    }
    for k, v in extra.items():
        if k == "_PYPROJECT_HOOKS_BACKEND_PATH_JSON":  # absolute host paths inside the source tree
            v = json.dumps([box.inside(p) for p in json.loads(v)])
        env[k] = v
    return [f"{k}={v}" for k, v in sorted(env.items())]


def make_policy(box: BuildBox, *, control_dir: str, script: str, cwd: str, extra: Mapping[str, str]) -> Policy:
    """The sandbox policy for one hook call (pure apart from reading who we are)."""
    from sandbox.host import caller, interpreter_prefixes
    from sandbox.policy import python_policy

    who = caller({})
    return python_policy(
        uid=who.uid, gid=who.gid, user=who.user, home=HOME_INSIDE, host_env={},
        interpreter_prefixes=interpreter_prefixes(venv=str(box.env_dir)),
        venv=None, project=None, cwd=cwd, network="host" if box.network else "none",
        binds=[(str(box.source), box.source_inside), (str(box.out_dir), OUT_INSIDE), (control_dir, CONTROL_INSIDE)],
        ro_binds=[(str(box.env_dir), ENV_INSIDE), (script, HOOKS_INSIDE)] + [(p, box.inside(p)) for p in box.protect],
        env=_environment(box, extra), profile="default", shell="/bin/sh", limits=dict(box.limits),
    )


def hook_runner(box: BuildBox) -> Runner:
    """A pyproject_hooks runner that runs each hook call inside the sandbox described by `box`.

    The hook's output (stdout and stderr, interleaved) is appended to `box.log_path`; a
    non-zero exit raises CalledProcessError carrying that output, as subprocess would.
    """

    def run(cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None) -> None:
        import sandbox

        _python, script, hook, control = cmd  # pyproject_hooks: [python, _in_process.py, hook, control dir]
        box.runs.append(hook)
        argv = ["/bin/sh", "-c", 'umask 022 && exec "$@"', "sh",  # files in the wheel get 644/755
                f"{ENV_INSIDE}/bin/python", HOOKS_INSIDE, hook, CONTROL_INSIDE]
        inside_cwd = box.inside(os.path.realpath(cwd or str(box.source)))
        policy = make_policy(box, control_dir=os.path.realpath(control), script=os.path.realpath(script),
                             cwd=inside_cwd, extra=extra_environ or {})
        start = box.log_path.stat().st_size if box.log_path.exists() else 0
        with open(box.log_path, "ab") as log, open(os.devnull, "rb") as null:
            try:
                code = sandbox.run(policy, argv, cache_dir=box.cache_dir, stdin=null.fileno(),
                                   stdout=log.fileno(), stderr=log.fileno())
            except sandbox.SandboxError as e:
                err = SandboxError(f"cannot start the build sandbox: {e.message}", hint=e.hint)
                err.exit_code = e.exit_code
                raise err from None
        if code != 0:
            with open(box.log_path, "rb") as f:
                f.seek(start)
                out = f.read().decode("utf-8", "replace")
            raise subprocess.CalledProcessError(code, list(cmd), output=out)

    return run
