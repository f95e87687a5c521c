"""In-process virtual environment creation: pyvenv.cfg, bin/python links, site-packages, activate scripts.

What CPython's `venv` module writes, without starting the target interpreter or pip: a
venv is a directory layout plus one config file, so writing it directly takes a few
milliseconds. While it is being built a marker file sits inside; a venv holding the marker
is half-built (Ctrl-C, kill -9) and is removed and recreated by the next run.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .errors import InstallError
from .interpreter import Interpreter

__all__ = ["VenvLayout", "create_venv", "ensure_venv", "venv_matches", "read_pyvenv_cfg", "BUILDING_MARKER",
           "mark_complete", "is_half_built", "discard_half_built"]

BUILDING_MARKER = ".pypm-building"  # present while the venv is not yet usable (see create_venv)


@dataclass(frozen=True)
class VenvLayout:
    """Where each install scheme key lands in one venv (absolute paths)."""

    root: Path
    purelib: Path
    platlib: Path
    scripts: Path  # bin/
    data: Path  # the venv root
    headers: Path  # include/site/pythonX.Y (a dist's headers go in a sub-directory named for it)
    include: Path  # include/pythonX.Y (the interpreter's own headers dir inside the venv; usually absent)
    python: Path  # bin/python
    version: tuple[int, int, int]
    cache_tag: str  # for __pycache__ names ("cpython-311")

    @classmethod
    def for_interpreter(cls, root: Path, interp: Interpreter) -> "VenvLayout":
        root = Path(os.path.abspath(root))
        p = interp.venv_paths

        def at(key: str) -> Path:
            return root / p[key] if p.get(key) else root

        return cls(root=root, purelib=at("purelib"), platlib=at("platlib"), scripts=at("scripts"),
                   data=at("data"), headers=at("headers"), include=at("include"),
                   python=at("scripts") / "python", version=interp.version, cache_tag=interp.cache_tag)

    @classmethod
    def from_venv(cls, root: Path) -> "VenvLayout":
        """The layout of an existing POSIX venv, read from its pyvenv.cfg (no interpreter started)."""
        root = Path(os.path.abspath(root))
        cfg = read_pyvenv_cfg(root)
        if cfg is None:
            raise InstallError(f"{root} is not a virtual environment (no pyvenv.cfg)",
                               hint="run `pypm sync` to create it")
        v = tuple(int(x) for x in (cfg.get("version_info") or cfg.get("version", "0.0.0")).split(".")[:3])
        impl = cfg.get("implementation", "cpython").lower()
        tag = cfg.get("pypm-cache-tag") or f"{'cpython' if impl == 'cpython' else impl}-{v[0]}{v[1]}"
        lib = root / "lib" / f"python{v[0]}.{v[1]}" / "site-packages"
        if impl == "pypy" and not lib.is_dir() and (root / "lib" / f"pypy{v[0]}.{v[1]}").is_dir():
            lib = root / "lib" / f"pypy{v[0]}.{v[1]}" / "site-packages"
        return cls(root=root, purelib=lib, platlib=lib, scripts=root / "bin", data=root,
                   headers=root / "include" / "site" / f"python{v[0]}.{v[1]}",
                   include=root / "include" / f"python{v[0]}.{v[1]}", python=root / "bin" / "python",
                   version=v, cache_tag=tag)  # type: ignore[arg-type]


def read_pyvenv_cfg(root: Path) -> dict[str, str] | None:
    """pyvenv.cfg as a dict, or None when there is none."""
    try:
        text = (Path(root) / "pyvenv.cfg").read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise InstallError(f"{root}/pyvenv.cfg cannot be read: {e}") from None
    out: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip().lower()] = v.strip()
    return out


def _identity(interp: Interpreter) -> dict[str, str]:
    return {
        "home": str(interp.base_executable.parent),
        "implementation": interp.implementation,
        "version_info": interp.version_str,
        "executable": os.path.realpath(interp.base_executable),
    }


def venv_matches(root: Path, interp: Interpreter) -> bool:
    """True if `root` is a complete venv made for this interpreter (same home, version, executable)."""
    root = Path(root)
    if (root / BUILDING_MARKER).exists():
        return False
    cfg = read_pyvenv_cfg(root)
    if cfg is None:
        return False
    want = _identity(interp)
    return (cfg.get("home") == want["home"] and cfg.get("version_info", cfg.get("version")) == want["version_info"]
            and cfg.get("executable", want["executable"]) == want["executable"]
            and (root / "bin" / "python").exists())


def _is_removable(root: Path) -> bool:
    """Only venvs (or what pypm was building) and empty directories are ever deleted."""
    if (root / BUILDING_MARKER).exists() or (root / "pyvenv.cfg").exists():
        return True
    try:
        return not any(root.iterdir())
    except NotADirectoryError:
        return False


def _remove(root: Path) -> None:
    if root.is_symlink() or root.is_file():
        raise InstallError(f"{root} exists and is not a directory", hint=f"move or remove {root}")
    if not _is_removable(root):
        raise InstallError(f"{root} exists and is not a virtual environment; pypm will not delete it",
                           hint=f"move or remove {root}, or point pypm at another path")
    _discard(root)


def _trash_prefix(root: Path) -> str:
    return (root.name if root.name.startswith(".") else "." + root.name) + ".pypm-old-"  # hidden either way


def _trash_name(root: Path) -> Path:
    return root.parent / f"{_trash_prefix(root)}{os.getpid()}-{time.monotonic_ns()}"


def _discard(root: Path) -> None:
    """Delete a venv so that an interruption cannot leave a half-deleted one at `root`.

    rmtree in place, interrupted, could leave a directory without pyvenv.cfg or the marker,
    which pypm would then refuse to touch; renaming first is atomic, and the renamed
    leftovers (`.venv.pypm-old-*`, pypm's own by name) are swept by the next create_venv.
    """
    trash = _trash_name(root)
    os.rename(root, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _sweep(root: Path) -> None:
    for old in root.parent.glob(_trash_prefix(root) + "*"):
        shutil.rmtree(old, ignore_errors=True)


def ensure_venv(root: Path, interp: Interpreter, *, prompt: str | None = None,
                keep_marker: bool = False) -> tuple[VenvLayout, bool]:
    """The venv at `root` for `interp`, (re)created when missing, half-built or made for another
    interpreter. Returns (layout, created). `keep_marker`: see create_venv."""
    root = Path(os.path.abspath(root))
    if venv_matches(root, interp):
        return VenvLayout.for_interpreter(root, interp), False
    return create_venv(root, interp, prompt=prompt, keep_marker=keep_marker), True


def create_venv(root: Path, interp: Interpreter, *, prompt: str | None = None,
                keep_marker: bool = False) -> VenvLayout:
    """Create a fresh venv at `root` (an existing venv there is removed first).

    On any error or Ctrl-C the half-built directory is removed before the exception propagates.
    With `keep_marker` the BUILDING_MARKER stays after a successful return: the caller (sync)
    fills the venv and calls `mark_complete` last, so an interruption at any point before
    that — even between this function's return and the caller noticing — leaves a venv that
    is known to be half-built (and is removed by the caller, or by the next run).
    """
    root = Path(os.path.abspath(root))
    if root.exists() or root.is_symlink():
        _remove(root)
    if root.parent.is_dir():
        _sweep(root)
    layout = VenvLayout.for_interpreter(root, interp)
    try:
        root.mkdir(parents=True)
        (root / BUILDING_MARKER).write_text(f"{os.getpid()}\n")
        _populate(layout, interp, prompt if prompt is not None else root.name)
        if not keep_marker:
            (root / BUILDING_MARKER).unlink()
    except BaseException as e:  # including KeyboardInterrupt: never leave a half-built venv
        if root.exists():
            _discard(root)
        if isinstance(e, OSError):
            raise InstallError(f"cannot create the virtual environment {root}: {e}",
                               hint="check the directory is writable and has free space") from e
        raise
    return layout


def mark_complete(root: Path) -> None:
    """End what create_venv(keep_marker=True) began: the venv is usable from now on."""
    try:
        (Path(root) / BUILDING_MARKER).unlink()
    except FileNotFoundError:
        pass


def is_half_built(root: str | Path) -> bool:
    return (Path(root) / BUILDING_MARKER).exists()


def discard_half_built(root: str | Path) -> None:
    """Remove a venv that still carries the building marker (nothing else is ever removed here)."""
    if is_half_built(root):
        _discard(Path(root))


def skeleton(layout: VenvLayout, interp: Interpreter, prompt: str) -> tuple[list[str], list[tuple[str, str]],
                                                                         list[tuple[str, bytes]]]:
    """What a new venv holds before any package: (directories below the root, parents first;
    (symlink target, link path); (file path, bytes)). `_populate` makes it; the fresh-venv fast
    path (pypm.syncrecipe) keeps it with the venv's install plans."""
    root = str(layout.root)
    dirs: list[str] = []
    # include/ as CPython's venv makes it: some build tools expect it to exist
    for d in sorted({str(layout.purelib), str(layout.platlib), str(layout.scripts), f"{root}/include"}):
        chain = []
        while d != root and d.startswith(root + "/"):
            chain.append(d)
            d = os.path.dirname(d)
        dirs += [c for c in reversed(chain) if c not in dirs]
    links: list[tuple[str, str]] = []
    # CPython's venv: lib64 -> lib on 64-bit POSIX except macOS (issue 21197)
    if interp.raw.get("maxsize_64", True) and interp.markers.get("sys_platform") != "darwin":
        links.append(("lib", f"{root}/lib64"))
    target = str(interp.base_executable)
    major, minor = interp.version[:2]
    names = ["python", f"python{major}", f"python{major}.{minor}"]
    if interp.implementation == "pypy":
        names += ["pypy", f"pypy{major}", f"pypy{major}.{minor}"]
    links += [(target, f"{layout.scripts}/{n}") for n in names]  # absolute, as `python -m venv --symlinks` does

    ident = _identity(interp)
    cfg = [
        f"home = {ident['home']}",
        "include-system-site-packages = false",
        f"version = {ident['version_info']}",
        f"executable = {ident['executable']}",
        f"implementation = {ident['implementation']}",
        f"version_info = {ident['version_info']}",
        f"prompt = {prompt}",
        f"pypm = {__version__}",
        f"pypm-cache-tag = {interp.cache_tag}",
    ]
    files = [(f"{root}/pyvenv.cfg", ("\n".join(cfg) + "\n").encode("utf-8")),
             # Tools (uv, hatch) treat a .gitignore of "*" as "do not commit this environment".
             (f"{root}/.gitignore", b"*\n")]
    files += [(f"{layout.scripts}/{name}", text.encode("utf-8")) for name, text in _activate_scripts(layout, prompt)]
    return dirs, links, files


def _populate(layout: VenvLayout, interp: Interpreter, prompt: str) -> None:
    dirs, links, files = skeleton(layout, interp, prompt)
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    for target, path in links:
        if not os.path.lexists(path):
            os.symlink(target, path)
    for path, data in files:
        with open(path, "wb") as f:
            f.write(data)


def _activate_templates() -> list[Path]:
    # The stdlib's own templates (shape-stable since 3.8), read from pypm's interpreter:
    # the target's stdlib may not ship them (Debian splits venv into python3-venv).
    import sysconfig

    base = Path(sysconfig.get_paths()["stdlib"]) / "venv" / "scripts"
    return [p for sub in ("common", "posix") for p in sorted((base / sub).glob("*")) if p.is_file()
            and not p.name.endswith(".ps1")]


_FALLBACK_ACTIVATE = """\
# This file must be used with "source bin/activate" from bash or zsh
deactivate () {
    if [ -n "${_OLD_VIRTUAL_PATH:-}" ]; then PATH="$_OLD_VIRTUAL_PATH"; export PATH; unset _OLD_VIRTUAL_PATH; fi
    if [ -n "${_OLD_VIRTUAL_PS1:-}" ]; then PS1="$_OLD_VIRTUAL_PS1"; export PS1; unset _OLD_VIRTUAL_PS1; fi
    unset VIRTUAL_ENV VIRTUAL_ENV_PROMPT
    hash -r 2>/dev/null
    [ "${1:-}" = "nondestructive" ] || unset -f deactivate
}
deactivate nondestructive
VIRTUAL_ENV="__VENV_DIR__"; export VIRTUAL_ENV
_OLD_VIRTUAL_PATH="$PATH"; PATH="$VIRTUAL_ENV/__VENV_BIN_NAME__:$PATH"; export PATH
if [ -z "${VIRTUAL_ENV_DISABLE_PROMPT:-}" ]; then
    _OLD_VIRTUAL_PS1="${PS1:-}"; PS1="__VENV_PROMPT__${PS1:-}"; export PS1
    VIRTUAL_ENV_PROMPT="__VENV_PROMPT__"; export VIRTUAL_ENV_PROMPT
fi
hash -r 2>/dev/null
"""


def _activate_scripts(layout: VenvLayout, prompt: str) -> list[tuple[str, str]]:
    """(file name in bin/, text) of the activate scripts."""
    subst = {
        "__VENV_DIR__": str(layout.root),
        "__VENV_NAME__": layout.root.name,
        "__VENV_PROMPT__": f"({prompt}) ",
        "__VENV_BIN_NAME__": layout.scripts.name,
        "__VENV_PYTHON__": str(layout.python),
    }
    templates = [(p.name, p.read_text(encoding="utf-8")) for p in _activate_templates()] or [
        ("activate", _FALLBACK_ACTIVATE)]
    out = []
    for name, text in templates:
        for k, v in subst.items():
            text = text.replace(k, v)
        out.append((name, text))
    return out
