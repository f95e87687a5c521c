"""Native plugins run in a process of their own: a crash in C is a clear error, not pypm's death.

A plugin's `pypm_hook` is C: a NULL dereference or an abort() in it used to kill pypm in the
middle of its work, with no word of which plugin or stage. Now each enabled native plugin gets
one host process for the whole pypm command (so a plugin may keep state between its stages,
as the header allows), started on first use: the same interpreter, without site-packages
(`-I -S`, ~17 ms), which dlopens the plugin with `native.load` and calls its hook with the
context it is sent. pypm sees the host die (EOF on the reply pipe) and reports "plugin NAME
crashed at STAGE (SIGSEGV)", exit code 9; what the command had done is rolled back as after
any other plugin failure.

Protocol: pypm.framing's messages (as pypm's other helper processes speak), on two pipes of
their own (the host's stdin, stdout and stderr are pypm's, so what the plugin prints reaches the
user as before). The host runs nothing pypm did not run in its own process before.
  host -> pypm, once: {"stages": [...]} or {"error": message, "hint": hint}
  pypm -> host, per call: {"stage", "project_root", "venv", "lock_path", "interpreter",
                           "config", "packages": [(name, version, wheel_path, sha256), ...]}
  host -> pypm, per call: {"report": text}... then {"rc": n, "last": text or None}
"""

from __future__ import annotations

import os
import sys

from ..errors import PluginError
from ..framing import recv, send

# Only what the host process needs is imported at the top: it starts once per command that
# uses a native plugin. The rest (subprocess, threading, ...) is the parent's, imported there.
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    import subprocess
    from pathlib import Path
    from typing import Any, Callable, Sequence

__all__ = ["HostedPlugin", "start"]

# Where the pypm package lives: the host imports it from there, without site-packages.
_TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The host imports pypm.errors, pypm.framing, pypm.plugins.native and this module, and none of
# the packages' __init__ (pypm.plugins' loads dataclasses and pathlib, ~13 ms more): the two
# packages are made as bare namespaces first.
_BOOT = ("import sys, types\n"
         "for name, sub in (('pypm', 'pypm'), ('pypm.plugins', 'pypm/plugins')):\n"
         "    m = types.ModuleType(name); m.__path__ = [sys.argv[1] + '/' + sub]; sys.modules[name] = m\n"
         "from pypm.plugins.nativehost import main\n"
         "main(sys.argv[2:])\n")


class HostedPlugin:
    """A native plugin in its host process: `stages`, and `call(...)` as native.NativePlugin's."""

    def __init__(self, name: str, path: Path, proc: subprocess.Popen[bytes], to_host: int, from_host: int,
                 stages: tuple[str, ...]) -> None:
        import threading

        self.name, self.path, self.stages = name, path, stages
        self._proc, self._to, self._from = proc, to_host, from_host  # our ends of the two pipes
        # One call at a time: sync's build threads fire pre-build/post-build concurrently, and the
        # host is one conversation.
        self._lock = threading.Lock()

    def call(self, stage: str, *, project_root: str, venv: str | None, lock_path: str | None,
             interpreter: str | None, config: Any, packages: Sequence[Any],
             report: Callable[[str], None]) -> tuple[int, str | None]:
        """Run the hook in the host; (its return value, the last message it reported)."""
        request = {"stage": stage, "project_root": project_root, "venv": venv, "lock_path": lock_path,
                   "interpreter": interpreter, "config": config or {},
                   "packages": [(p.name, p.version, None if p.wheel_path is None else str(p.wheel_path), p.sha256)
                                for p in packages]}
        with self._lock:
            try:
                send(self._to, request)
            except OSError:  # the host is gone (it crashed in an earlier stage's aftermath), or closed
                raise self._crashed(stage) from None
            while True:
                msg = recv(self._from)  # None: end-of-file, or the host died mid-message
                if not isinstance(msg, dict):
                    raise self._crashed(stage)
                if "report" in msg:
                    report(msg["report"])
                else:
                    return int(msg["rc"]), msg.get("last")

    def _crashed(self, stage: str) -> PluginError:
        import signal
        import subprocess

        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - it closed its pipe but lives on
            self._proc.kill()
            code = self._proc.wait()
        if code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"its process exited with status {code} during the hook"
        return PluginError(f"plugin {self.name} crashed at {stage} ({how})",
                           hint=f"the fault is in {self.path}: fix it or remove {self.name!r} from "
                                "[tool.pypm] plugins; nothing this command did was kept half-done")

    def close(self) -> None:
        import subprocess

        # Once only (unload_all, then atexit): a closed descriptor's number may be another file's by then.
        fds, self._to, self._from = (self._to, self._from), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hook that never returns
            self._proc.kill()
            self._proc.wait()


def start(name: str, path: Path) -> HostedPlugin:
    """Start the host for `path`; it loads the plugin (a load problem is a PluginError, as before)."""
    import subprocess

    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    try:
        # -I -S: no user site, no site-packages, no PYTHON* variables: the host needs only the
        # standard library and pypm (on sys.path from _TOP). Its fds 0-2 are ours.
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _BOOT, _TOP, name, str(path),
                                 str(req_r), str(resp_w)], pass_fds=(req_r, resp_w), close_fds=True)
    except OSError as e:
        for fd in (req_r, req_w, resp_r, resp_w):
            os.close(fd)
        raise PluginError(f"plugin {name}: cannot start its host process: {e.strerror}",
                          hint=f"check that {sys.executable} can be run") from None
    os.close(req_r)
    os.close(resp_w)
    hello = recv(resp_r)
    if not isinstance(hello, dict) or "stages" not in hello:
        os.close(req_w)
        os.close(resp_r)
        code = proc.wait()
        if isinstance(hello, dict) and "error" in hello:
            raise PluginError(hello["error"], hint=hello.get("hint"))
        what = f"killed by signal {-code}" if code < 0 else f"status {code}"
        raise PluginError(f"plugin {name} crashed while being loaded from {path} ({what})",
                          hint="its initialisation code (constructors) failed; rebuild or remove it")
    hosted = HostedPlugin(name, path, proc, req_w, resp_r, tuple(hello["stages"]))
    import atexit

    atexit.register(hosted.close)
    return hosted


# ---------------------------------------------------------------- the host process

def main(argv: list[str]) -> None:
    name, path, req_fd, resp_fd = argv[0], argv[1], int(argv[2]), int(argv[3])
    import _signal

    # Ctrl-C reaches the whole foreground process group, this host too: pypm decides what it
    # means (a sandboxed command's Ctrl-C still runs post-run), so it must not end the host.
    # A handler rather than SIG_IGN: execve resets a handler, so what the plugin starts gets
    # the default back, as it did when plugins ran inside pypm.
    _signal.signal(_signal.SIGINT, lambda *_: None)
    from types import SimpleNamespace

    from . import native

    try:
        plugin = native.load(name, path)  # a str: pathlib is ~3 ms here
    except PluginError as e:
        send(resp_fd, {"error": e.message, "hint": e.hint})
        return
    send(resp_fd, {"stages": list(plugin.stages)})
    while (r := recv(req_fd)) is not None:  # None: pypm closed its end (the command is over)
        packages = [SimpleNamespace(name=n, version=v, wheel_path=w, sha256=s) for n, v, w, s in r["packages"]]
        rc, last = plugin.call(r["stage"], project_root=r["project_root"], venv=r["venv"],
                               lock_path=r["lock_path"], interpreter=r["interpreter"], config=r["config"],
                               packages=packages, report=lambda text: send(resp_fd, {"report": text}))
        send(resp_fd, {"rc": rc, "last": last})
