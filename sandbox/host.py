"""What a policy needs to know about this machine: who runs it, where an interpreter lives (IO)."""

from __future__ import annotations

import os

from .errors import SandboxError
from .record import record

TYPE_CHECKING = False  # typing costs ~2 ms at import; annotations are strings here
if TYPE_CHECKING:  # pragma: no cover
    from typing import Sequence

__all__ = ["Caller", "caller", "interpreter_prefixes", "resolve_bind", "pth_paths", "link_in"]


@record
class Caller:
    uid: int
    gid: int
    user: str
    home: str
    shell: str


def caller(env: dict[str, str] | None = None) -> Caller:
    """The calling user; $HOME and $SHELL win over the password database, as a login would set them."""
    import pwd

    env = dict(os.environ) if env is None else env
    uid, gid = os.getuid(), os.getgid()
    try:
        pw = pwd.getpwuid(uid)
        user, pw_home, pw_shell = pw.pw_name, pw.pw_dir, pw.pw_shell
    except KeyError:
        user, pw_home, pw_shell = env.get("USER") or f"u{uid}", "", ""
    home = os.path.normpath(env.get("HOME") or pw_home or f"/home/{user}")
    if home == "/" or not os.path.isabs(home):
        home = f"/home/{user}"  # a tmpfs cannot replace the root itself
    shell = env.get("SHELL") or pw_shell or "/bin/sh"
    return Caller(uid, gid, user, home, shell)


def _prefix_of(exe: str) -> str:
    """/opt/py/bin/python3.11 -> /opt/py (the directory holding bin/ and lib/)."""
    return os.path.dirname(os.path.dirname(os.path.realpath(exe)))


def interpreter_prefixes(*, venv: str | None = None, python: str | None = None) -> list[str]:
    """The installation prefixes a venv's (or a given) interpreter needs, following symlinks
    (.venv/bin/python -> /root/.pyenv/versions/3.11.7/bin/python3.11) and pyvenv.cfg's home."""
    out: list[str] = []

    def add(p: str) -> None:
        if p and p != "/" and p not in out:
            out.append(p)

    if python:
        add(_prefix_of(python))
    if venv:
        exe = os.path.join(venv, "bin", "python")
        if os.path.exists(exe):
            add(_prefix_of(exe))
        try:
            with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as f:
                for line in f:
                    key, sep, value = line.partition("=")
                    if sep and key.strip() == "home":
                        add(os.path.dirname(os.path.realpath(value.strip())))
        except OSError:
            pass
    return out


def link_in(path: str, trees: Sequence[str]) -> str | None:
    """The first symlink on the way to `path` that lies inside one of `trees` (real paths of
    directories a sandboxed command can write, so it may have planted the link), or None.
    Resolving through such a link on the host would let the command choose what the next
    run binds in (its ~/.ssh, say)."""
    if not trees:
        return None
    cur = "/"
    for part in path.split("/"):
        if part in ("", "."):
            continue
        cur = os.path.dirname(cur) if part == ".." else os.path.join(cur, part)
        if os.path.islink(cur):
            if any(cur.startswith(t.rstrip("/") + "/") for t in trees):
                return cur
            cur = os.path.realpath(cur)
    return None


def pth_paths(venv: str, untrusted: Sequence[str] = ()) -> list[str]:
    """Directories outside the venv that its .pth files put on sys.path (editable installs of
    path dependencies: `../lib/src`), so the sandbox can bind them read-only. An entry reached
    through a symlink inside `untrusted` (the writable project) is left out: it is visible
    there already, and the link may have been planted (see link_in)."""
    out: list[str] = []
    real_venv = os.path.realpath(venv)
    pths = []
    lib = os.path.join(venv, "lib")
    for py in sorted(os.listdir(lib)) if os.path.isdir(lib) else []:  # os.listdir: glob costs an import
        site = os.path.join(lib, py, "site-packages")
        if py.startswith("python") and os.path.isdir(site):
            pths += [os.path.join(site, n) for n in sorted(os.listdir(site)) if n.endswith(".pth")]
    for pth in pths:
        try:
            with open(pth, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith(("#", "import ", "import\t")):
                continue  # import lines run code; their paths cannot be known without running it
            given = os.path.join(os.path.dirname(pth), line)
            if untrusted and link_in(given, untrusted):
                continue
            path = os.path.realpath(given)
            if os.path.isdir(path) and not (path == real_venv or path.startswith(real_venv + "/")) and path not in out:
                out.append(path)
    return out


def resolve_bind(spec: str, *, base: str, what: str) -> tuple[str, str]:
    """'SRC[:DST]' -> (absolute host source with symlinks resolved, destination inside).

    A relative SRC is taken from `base`; DST defaults to SRC's absolute path; SRC must exist.
    """
    src, sep, dst = spec.partition(":")
    if not src or (sep and not dst):
        raise SandboxError(f"{what} {spec!r}: empty source or destination", hint="write SRC or SRC:DST")
    given = os.path.join(base, os.path.expanduser(src))
    full = os.path.realpath(given)
    if not os.path.exists(full):
        raise SandboxError(f"{what} {spec}: {src} does not exist ({full})",
                           hint="bind only paths that exist on the host; create it first or fix the path")
    if not sep:
        dst = os.path.abspath(given)
    if not os.path.isabs(dst):
        raise SandboxError(f"{what} {spec!r}: the destination {dst!r} is not an absolute path",
                           hint="write SRC:/absolute/path/inside")
    dst = os.path.normpath(dst)
    if dst == "/":
        raise SandboxError(f"{what} {spec!r}: cannot bind over /", hint="choose a directory inside")
    return full, dst
