"""The journal of `pypm add` / `pypm remove`: a killed edit is rolled back by the next command.

Why: `pypm add` is all or nothing. It writes pyproject.toml, locks, syncs, and on a failure or
Ctrl-C it puts pyproject.toml and pypm.lock back (pypm.edit). A `kill -9` (or a power cut) gives
it no chance to: the package stayed named in pyproject.toml, and the next `pypm sync` locked it
again, or failed on it for good when it was a typo.

So before it writes anything, the command records in the cache what each file held (`before`),
and the digest of each version it writes (`ours`, recorded before pyproject.toml is written;
pypm.lock's after the lock, which pypm.locking writes). It removes the record when it has
finished or rolled back itself. A record left behind is a command that died: the next pypm
command on that project (`recover`, from the CLI's project loading and from add/remove) puts
back each file that still holds a version the dead command wrote, and says so. A file holding
anything else was changed since (an editor, a git checkout) and is left as it is, with a
warning; a pypm.lock left stale that way is locked again by the next sync.

"The next command": the record's project directory is the one the dead command locked (the
workspace's root for a member); a command in it or below it recovers. A live command holds the
project's flock (pypm.sync.project_lock) for its whole run: a record whose directory can be
locked without waiting is a dead one's. Records live in the cache (`edits/<sha256 of the
directory>.json`, this user's, 0600), never in the project; one that another user could have
written, or that names any other file than the directory's pyproject.toml and pypm.lock (or a
member's pyproject.toml below it), is ignored.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["EDITS_DIR", "Journal", "recover"]

EDITS_DIR = "edits"
_VERSION = 1


def _sha(data: bytes) -> str:
    from .fastpath import sha256

    return sha256(data).hexdigest()


def _path_for(lock_dir: Path) -> Path:
    from .config import cache_dir

    return cache_dir() / EDITS_DIR / (_sha(os.fsencode(str(lock_dir)))[:32] + ".json")


class Journal:
    """The record of one add/remove (see the module's docstring). Best effort: a cache that cannot
    be written costs a killed command its roll-back, never the command."""

    def __init__(self, lock_dir: Path, command: str, what: str, before: dict[Path, bytes | None]) -> None:
        """`command`: "add" or "remove"; `what`: what it does, as it says it ("added X to Y")."""
        self.path = _path_for(lock_dir)
        self.data: dict[str, Any] = {
            "version": _VERSION, "lock-dir": str(lock_dir), "command": command, "what": what, "pid": os.getpid(),
            "files": {str(p): {"before": None if b is None else base64.b64encode(b).decode("ascii"), "ours": []}
                      for p, b in before.items()}}
        self._write()

    def ours(self, path: Path, data: bytes) -> None:
        """`data` is (or is about to be) written to `path` by this command."""
        self.data["files"][str(path)]["ours"].append(_sha(data))
        self._write()

    def close(self) -> None:
        """Finished, or rolled back by the command itself: nothing is left to recover."""
        try:
            self.path.unlink()
        except OSError:
            pass

    def _write(self) -> None:
        from .fastpath import replace_file

        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # on disk before the file it protects is written
            replace_file(str(self.path), json.dumps(self.data, sort_keys=True).encode(), mode=0o600, durable=True)
        except OSError:
            pass


def recover(ctx: Any, root: Path) -> None:
    """Roll back what a killed add/remove left in the project at `root` (or in the workspace it
    belongs to). Costs one listdir of the cache's `edits/` when there is nothing to do."""
    from .config import cache_dir

    d = cache_dir() / EDITS_DIR
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith(".json") and not n.startswith("."))
    except OSError:
        return
    for name in names:
        _recover_one(ctx, root, d / name)


def _recover_one(ctx: Any, root: Path, path: Path) -> None:
    from sandbox.cachedir import ours

    try:
        with open(path, "rb") as f:
            if not (ours(os.fstat(f.fileno())) and ours(os.stat(path.parent))):
                return  # not a record this user alone could have written
            data = json.loads(f.read())
        lock_dir = Path(data["lock-dir"])
        files = {Path(p): v for p, v in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    if not (root == lock_dir or root.is_relative_to(lock_dir)) or path != _path_for(lock_dir):
        return
    for p in files:  # only what add/remove write: the project's files, under the locked directory
        if not (p.name in ("pyproject.toml", "pypm.lock") and p.is_relative_to(lock_dir) and ".." not in p.parts):
            return
    from .sync import _HELD, project_lock_nowait

    with project_lock_nowait(lock_dir, held=str(lock_dir) in _HELD) as got:
        if not got or not path.exists():
            return  # a live command works on it (or finished meanwhile)
        restored, left = [], []
        for p, rec in files.items():
            try:
                before = None if rec["before"] is None else base64.b64decode(rec["before"])
                try:
                    now: bytes | None = p.read_bytes()
                except FileNotFoundError:
                    now = None
                if now == before:
                    continue
                if now is None or _sha(now) not in rec["ours"]:
                    left.append(p)
                    continue
                if before is None:
                    p.unlink()
                else:
                    from .lockfile import write_atomic

                    write_atomic(p, before.decode("utf-8"))
                restored.append(p)
            except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
                ctx.info(f"warning: could not put {p} back after an interrupted `pypm {data.get('command')}`: {e}")
                left.append(p)
        what = (f"`pypm {data.get('command')}` ({data.get('what')}; process {data.get('pid')}) was interrupted "
                "before it finished")
        if restored:
            ctx.info(f"{what}: rolled back, {' and '.join(str(p) for p in restored)} "
                     f"{'is' if len(restored) == 1 else 'are'} as before it")
        for p in left:
            ctx.info(f"warning: {what}, and {p} has changed since: left as it is")
        try:
            path.unlink()
        except OSError:
            pass
