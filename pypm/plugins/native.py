"""Native plugins: the ctypes mirror of `pypm_plugin.h` and the dlopen-ed plugin object.

Loaded in the plugin's host process (nativehost), which starts for every pypm command that
uses a native plugin: standard library only, and no dataclasses or typing at run time
(~10 ms of the host's start).
"""

from __future__ import annotations

import ctypes
import json

from ..errors import PluginError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    from typing import Any, Callable, Sequence

__all__ = ["ABI_VERSION", "STAGE_BITS", "include_dir", "Package", "Context", "NativePlugin", "load"]

# Must equal PYPM_PLUGIN_ABI_VERSION in include/pypm_plugin.h (tests/plugins check it).
ABI_VERSION = 1
STAGE_BITS = {
    "pre-lock": 1 << 0, "post-lock": 1 << 1, "pre-sync": 1 << 2, "post-sync": 1 << 3,
    "pre-build": 1 << 4, "post-build": 1 << 5, "pre-run": 1 << 6, "post-run": 1 << 7,
}


def include_dir() -> Path:
    """The directory holding pypm_plugin.h (`pypm include-dir`)."""
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "include"


# ---------------------------------------------------------------- the ctypes mirror of the header

class Package(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("version", ctypes.c_char_p),
        ("wheel_path", ctypes.c_char_p),
        ("sha256", ctypes.c_char_p),
    ]


class Context(ctypes.Structure):
    pass


REPORT_FN = ctypes.CFUNCTYPE(None, ctypes.POINTER(Context), ctypes.c_char_p)

Context._fields_ = [
    ("abi_version", ctypes.c_uint32),
    ("stage_id", ctypes.c_uint32),
    ("stage", ctypes.c_char_p),
    ("plugin_name", ctypes.c_char_p),
    ("project_root", ctypes.c_char_p),
    ("venv", ctypes.c_char_p),
    ("lock_path", ctypes.c_char_p),
    ("interpreter", ctypes.c_char_p),
    ("config_json", ctypes.c_char_p),
    ("packages", ctypes.POINTER(Package)),
    ("n_packages", ctypes.c_size_t),
    ("report", REPORT_FN),
]


def _b(value: Any) -> bytes | None:
    return None if value is None else str(value).encode("utf-8", "surrogateescape")


class NativePlugin:
    """A `pypm_<name>.so` opened with dlopen; `call(...)` runs its `pypm_hook` for one stage."""

    def __init__(self, name: str, path: Path | str, stages: tuple[str, ...], hook: Any, lib: Any) -> None:
        self.name, self.path, self.stages = name, path, stages
        self._hook, self._lib = hook, lib

    def __repr__(self) -> str:
        return f"NativePlugin(name={self.name!r}, path={str(self.path)!r}, stages={self.stages!r})"

    def call(self, stage: str, *, project_root: str, venv: str | None, lock_path: str | None,
             interpreter: str | None, config: Any, packages: Sequence[Any],
             report: Callable[[str], None]) -> tuple[int, str | None]:
        """Run the hook; return (its return value, the last message it reported)."""
        last: list[str] = []

        def on_report(_ctx: Any, message: bytes | None) -> None:
            # Never let a Python exception unwind into C: it would be printed and lost.
            try:
                text = (message or b"").decode("utf-8", "replace")
                last.append(text)
                report(text)
            except Exception:  # noqa: BLE001 - see comment above
                pass

        # Every byte string must outlive the call: keep them referenced in `keep`.
        keep: list[Any] = []

        def s(value: Any) -> bytes | None:
            b = _b(value)
            keep.append(b)
            return b

        arr = (Package * max(len(packages), 1))()
        for i, p in enumerate(packages):
            arr[i] = Package(s(p.name), s(p.version), s(p.wheel_path), s(p.sha256))
        callback = REPORT_FN(on_report)
        ctx = Context(
            abi_version=ABI_VERSION,
            stage_id=STAGE_BITS[stage],
            stage=s(stage),
            plugin_name=s(self.name),
            project_root=s(project_root),
            venv=s(venv),
            lock_path=s(lock_path),
            interpreter=s(interpreter),
            config_json=s(json.dumps(config or {}, sort_keys=True, default=str)),
            packages=arr,
            n_packages=len(packages),
            report=callback,
        )
        rc = int(self._hook(ctypes.byref(ctx)))
        # `keep`, `arr` and `callback` were referenced up to here, so ctypes did not free them
        # while C held pointers into them; after the return the plugin must not keep any.
        return rc, (last[-1] if last else None)


def load(name: str, path: Path | str) -> NativePlugin:
    """dlopen `path` and check its exports; a load problem is a PluginError naming the file."""
    try:
        # RTLD_LOCAL: two plugins' symbols (pypm_hook in each) must not collide.
        lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
    except OSError as e:
        raise PluginError(f"plugin {name} could not be loaded from {path}: {e}",
                          hint="build it as a shared object for this machine: "
                               "cc -shared -fPIC -I\"$(pypm include-dir)\" -o pypm_NAME.so NAME.c") from None
    try:
        hook = lib.pypm_hook
    except AttributeError:
        raise PluginError(f"plugin {name}: {path} does not export `pypm_hook`",
                          hint="define `int pypm_hook(const struct pypm_context *ctx)` "
                               "(see pypm_plugin.h in `pypm include-dir`)") from None
    hook.restype = ctypes.c_int
    hook.argtypes = [ctypes.POINTER(Context)]
    try:
        abi = ctypes.c_uint32.in_dll(lib, "pypm_plugin_abi").value
    except ValueError:
        abi = ABI_VERSION  # not declared: assume the plugin was built against this header
    if abi != ABI_VERSION:
        raise PluginError(f"plugin {name}: {path} was built for plugin ABI {abi}, this pypm speaks {ABI_VERSION}",
                          hint="rebuild the plugin against the header in `pypm include-dir`")
    try:
        mask = ctypes.c_uint32.in_dll(lib, "pypm_plugin_stages").value
    except ValueError:
        mask = 0xFF
    stages = tuple(st for st, bit in STAGE_BITS.items() if mask & bit)
    return NativePlugin(name, path, stages, hook, lib)
