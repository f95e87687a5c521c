"""Fixtures for the sandbox tests: a world-readable interpreter + sandbox install, and runners
that start `python -m sandbox` as root or as an unprivileged uid (65534, via setpriv).

The machine's own Python lives under /root, which other users cannot read, so the
unprivileged runs use a venv made from the distribution's /usr/bin/python3 with copies of
`sandbox`, `pypm` and the few libraries they import, in a 0755 directory under /tmp.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = 65534
# What `python -m sandbox` and `python -m pypm run` import besides the standard library.
_DEPS = ("pyseccomp", "packaging", "platformdirs", "filelock", "tomli_w", "psutil",
         # for `pypm x` as uid 65534 (test_pypm_run), which locks and downloads its environment
         "resolvelib", "httpx", "httpcore", "h11", "idna", "certifi")

_SUID_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    char line[256], eff[64] = "?";
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "CapEff:", 7) == 0) sscanf(line + 7, "%63s", eff);
    printf("euid=%d capeff=%s\n", (int)geteuid(), eff);
    return 0;
}
"""


def _copy_module(name: str, dest: Path) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{name} is not importable here; the sandbox tests need it")
    if spec.submodule_search_locations:
        src = Path(next(iter(spec.submodule_search_locations)))
        shutil.copytree(src, dest / src.name, symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(spec.origin, dest / Path(spec.origin).name)


@dataclass
class World:
    """A world-readable tree: base/venv (python + sandbox + pypm), probe.py, secret, suid."""

    base: Path
    python: str  # base/venv/bin/python
    probe: Path
    secret: Path
    suid: Path | None

    def user_dir(self, user: str, name: str) -> Path:
        """A directory owned by `user` ("root" | "nobody"), fresh for each call."""
        d = Path(tempfile.mkdtemp(prefix=f"{name}-{user}-", dir=self.base))
        os.chmod(d, 0o755)
        if user == "nobody":
            os.chown(d, NOBODY, NOBODY)
        return d


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    if os.getuid() != 0:
        pytest.skip("the sandbox tests switch between root and uid 65534: run them as root")
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is missing: the unprivileged runs need a world-readable interpreter")
    base = Path(tempfile.mkdtemp(prefix="pypm-sbx-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        venv = base / "venv"
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        # The sandbox package with its profiles (sandbox/profiles -> ../seccomp resolved), pypm, deps.
        shutil.copytree(REPO / "sandbox", site / "sandbox", symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "pypm", site / "pypm", symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
        for dep in _DEPS:
            _copy_module(dep, site)
        probe = base / "probe.py"
        shutil.copy2(Path(__file__).parent / "probe.py", probe)
        secret = base / "secret.txt"
        secret.write_text("the host's secret\n")
        suid: Path | None = None
        if shutil.which("gcc"):
            src = base / "suid.c"
            src.write_text(_SUID_C)
            suid = base / "suid"
            subprocess.run(["gcc", "-O1", "-o", str(suid), str(src)], check=True)
            os.chmod(suid, 0o4755)  # setuid root: outside the sandbox, uid 65534 gets euid 0 from it
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
        yield World(base, str(venv / "bin" / "python"), probe, secret, suid)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_user(user: str, argv: Sequence[str], env: dict[str, str]) -> list[str]:
    """argv run as `user` with exactly `env` (setpriv drops to 65534 with no groups)."""
    envs = [f"{k}={v}" for k, v in env.items()]
    if user == "root":
        return ["env", "-i", *envs, *argv]
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
            "env", "-i", *envs, *argv]


@dataclass
class Box:
    """Runs `python -m sandbox` as one user, from the world venv."""

    world: World
    user: str
    home: Path
    cache: Path
    runner: str = "native"  # PYPM_SANDBOX_RUNNER: the compiled helper (insisted on) or the Python runner

    @property
    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "PATH": "/usr/local/bin:/usr/bin:/bin", "PYPM_CACHE_DIR": str(self.cache),
                "LANG": "C.UTF-8", "TMPDIR": "/tmp", "PIP_CONFIG_FILE": os.devnull,
                "PYPM_SANDBOX_RUNNER": self.runner}

    def argv(self, sandbox_args: Sequence[str], cmd: Sequence[str]) -> list[str]:
        return as_user(self.user, [self.world.python, "-m", "sandbox", *sandbox_args, "--", *cmd], self.env)

    def run(self, sandbox_args: Sequence[str], cmd: Sequence[str], *, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(sandbox_args, cmd), capture_output=True, text=True, timeout=timeout, **kw)

    def popen(self, sandbox_args: Sequence[str], cmd: Sequence[str], **kw) -> subprocess.Popen[str]:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(self.argv(sandbox_args, cmd), text=True, **kw)


@pytest.fixture(scope="session")
def boxes(world: World) -> dict[str, Box]:
    out = {}
    for user in ("root", "nobody"):
        out[user] = Box(world, user, world.user_dir(user, "home"), world.user_dir(user, "cache"))
        for runner in ("native", "python"):
            b = out[user]
            out[f"{user}-{runner}"] = Box(world, user, b.home, b.cache, runner)
    return out


@pytest.fixture(params=["root-native", "nobody-native", "root-python", "nobody-python"])
def box(request, boxes) -> Box:
    """The same test as real root and as an unprivileged uid, through the compiled helper
    (sandbox/helper.c) and through the Python runner: both must enforce the same policy."""
    return boxes[request.param]


def probe(box: Box, project: Path, port: int, extra_args: Sequence[str] = ()) -> dict:
    """Run probe.py in a sandbox as box.user (project read-write, project/ro read-only)."""
    (project / "ro").mkdir(exist_ok=True)
    if box.user == "nobody":
        os.chown(project / "ro", NOBODY, NOBODY)
    cfg = {"secret": str(box.world.secret), "home": str(box.home), "ro": str(project / "ro"), "rw": str(project),
           "host_pid": os.getpid(), "port": port,
           "setuid_bin": "/suid" if box.world.suid else None}
    args = ["--project", str(project), "--ro-bind", str(project / "ro"),
            "--ro-bind", f"{box.world.probe}:/probe.py", "--python", box.world.python, *extra_args]
    if box.world.suid:
        args += ["--ro-bind", f"{box.world.suid}:/suid"]
    r = box.run(args, [SYSTEM_PYTHON, "/probe.py", json.dumps(cfg)])
    assert r.returncode == 0, f"probe failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout)


def sandbox_dirs() -> set[str]:
    """Temporary roots of sandboxes that exist right now (all users)."""
    return {n for n in os.listdir("/tmp") if n.startswith("pypm-sandbox.")}


def sandbox_mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line for line in f if "pypm-sandbox." in line]


__all__ = ["World", "Box", "as_user", "probe", "sandbox_dirs", "sandbox_mounts", "NOBODY", "SYSTEM_PYTHON", "REPO", "slow_pdeathsig_shim"]


@pytest.fixture
def app(pypm, dists, index_server, tmp_path):
    """`app(tool="")`: a synced project with one package (module `greet`, console script `greet`);
    `tool` is appended to its pyproject.toml. For the tests of `pypm run` and its launcher."""
    from tests.e2e.test_sync import write_lock, write_project

    w = dists.wheel("greet", "1.0", modules={"greet/__init__.py": "def main():\n    print('hi from greet')\n"},
                    entry_points={"console_scripts": {"greet": "greet:main"}})
    server = index_server()

    def make(tool: str = "") -> Path:
        project = write_project(tmp_path / "proj", deps=["greet"], tool=tool)
        write_lock(project, server, [w], main=["greet"])
        pypm("sync", "--frozen", cwd=project, check=True)
        return project

    return make


_SLOW_PDEATHSIG_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <unistd.h>
/* In the sandbox's init (pid 1) only: wait before PR_SET_PDEATHSIG, widening the window in
 * which the processes above it can die unseen. */
int prctl(int option, ...) {
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
    va_end(ap);
    if (option == PR_SET_PDEATHSIG && getpid() == 1)
        usleep(400000);
    int (*real)(int, ...) = (int (*)(int, ...))dlsym(RTLD_NEXT, "prctl");
    return real(option, a2, a3, a4, a5);
}
"""


def slow_pdeathsig_shim(tmp_path: Path) -> Path:
    """An LD_PRELOAD library that makes the sandbox's init wait 0.4 s before PR_SET_PDEATHSIG: the
    window in which a killed caller would leave the command running, for the lifeline tests."""
    src, lib = tmp_path / "slow_pdeathsig.c", tmp_path / "slow_pdeathsig.so"
    src.write_text(_SLOW_PDEATHSIG_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src), "-ldl"], check=True, timeout=60)
    return lib
