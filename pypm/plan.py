"""The sync plan: which file of each locked package to use, and the diff against the venv.

Pure: takes the lock's packages, the target's wheel tags and what the venv holds, and returns
data (`Plan`). `pypm sync` executes a plan in one place; `pypm sync --dry-run` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from .errors import InstallError, LockError
from .lockfile import FileEntry, LockedPackage, canonical_name

__all__ = [
    "Wanted",
    "Installed",
    "Plan",
    "choose_file",
    "refuse_unhashed",
    "make_plan",
    "format_plan",
    "KEEP_NONE",
    "KEEP_FOREIGN",
    "KEEP_ALL",
]

# Which installed distributions the selection does not want a sync leaves in place (make_plan's
# `keep`), as uv's exact and inexact syncs:
KEEP_NONE = "none"  # `pypm sync`, `pypm remove`, `run --exact`: the venv holds exactly the selection
# `pypm run`/`shell`/`add`/`version`: what another installer put there (pip, uv, by hand: no
# pypm_source.json) stays, as `uv run` leaves it; what pypm itself installed and no longer wants goes
KEEP_FOREIGN = "foreign"
KEEP_ALL = "all"  # `pypm sync --inexact`: nothing is removed (a dist with the same name is still replaced)


@dataclass(frozen=True)
class Wanted:
    """One distribution the venv must hold: `kind` is "wheel", "sdist" (build it), "editable" (the
    project or a path dependency), "directory" (a path dependency, built from its directory) or
    "git" (a git dependency, built from its commit's checkout)."""

    name: str  # canonical
    version: str
    kind: str
    file: FileEntry | None  # None for the editable project itself
    # What identifies these exact bits once installed: the wheel's/sdist's sha256, or for the
    # editable project a hash of its build inputs. A different token means "replace".
    token: str
    package: LockedPackage | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Installed:
    """One distribution found in the venv, as the installer recorded it."""

    name: str  # canonical
    version: str
    token: str | None  # the sha256 recorded at install time; None when unknown (not ours)
    complete: bool = True  # False: a crash left it half-installed; it must be reinstalled


@dataclass(frozen=True)
class Plan:
    install: tuple[Wanted, ...] = ()
    remove: tuple[Installed, ...] = ()
    replace: tuple[tuple[Installed, Wanted], ...] = ()
    unchanged: tuple[Wanted, ...] = ()
    kept: tuple[Installed, ...] = ()  # not wanted, and left installed (`keep`): no change

    @property
    def is_noop(self) -> bool:
        return not (self.install or self.remove or self.replace)

    def to_fetch(self) -> list[Wanted]:
        """What must come through the cache: new and replacing dists, editable excluded."""
        return [w for w in (*self.install, *(n for _, n in self.replace)) if w.kind not in ("editable", "directory", "git")]


def _wheel_rank(filename: str, priority: Mapping[str, int]) -> tuple[int, tuple[int, str]] | None:
    """(best tag position, negated build tag) for a wheel the target can use, else None."""
    # Most of a lock's wheels are for other platforms: their tags (the last three fields of the
    # name, PEP 427) are tried by hand first, and only a wheel with a usable tag pays for
    # packaging's full parse (~10 us a file; the web stack's lock lists 1,353 wheels).
    parts = filename[:-4].split("-") if filename.endswith(".whl") else []
    if len(parts) not in (5, 6):
        return None
    py, abi, plat = (p.lower().split(".") for p in parts[-3:])
    if not any(f"{x}-{y}-{z}" in priority for x in py for y in abi for z in plat):
        return None
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        _, _, build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    ranks = [priority[str(t)] for t in tags if str(t) in priority]
    if not ranks:
        return None
    # Lower is better: tag position first, then the higher build number (PEP 427).
    return (min(ranks), (-build[0], build[1]) if build else (0, ""))


_last_priorities: tuple[object, dict[str, int]] | None = None


def _priorities(tags: Sequence[object]) -> dict[str, int]:
    """{tag string: position} of the interpreter's tags (best first), made once per tag list:
    choose_file runs once per package with the same ~900 tags."""
    global _last_priorities
    last = _last_priorities
    if last is not None and last[0] is tags:
        return last[1]
    priority: dict[str, int] = {}
    for i, t in enumerate(tags):
        priority.setdefault(str(t), i)
    _last_priorities = (tags, priority)
    return priority


def choose_file(pkg: LockedPackage, tags: Sequence[object], interpreter: str) -> tuple[str, FileEntry]:
    """The best file of `pkg` for an interpreter whose supported tags are `tags` (best first).

    Returns ("wheel", entry) for the compatible wheel of highest tag priority, else
    ("sdist", entry) when there is a source distribution to build, else raises InstallError
    naming the package, the interpreter and the files that exist.
    """
    priority = _priorities(tags)
    best: tuple[tuple[int, tuple[int, str]], FileEntry] | None = None
    for w in pkg.wheels:
        rank = _wheel_rank(w.filename, priority)
        if rank is not None and (best is None or (rank, w.filename) < (best[0], best[1].filename)):
            best = (rank, w)
    if best is not None:
        return "wheel", best[1]
    if pkg.sdist is not None:
        return "sdist", pkg.sdist
    files = ", ".join(f.filename for f in pkg.files()) or "no files at all"
    raise InstallError(
        f"{pkg.name}=={pkg.version} has no wheel for {interpreter} and no source distribution "
        f"(the lock lists: {files})",
        hint="choose another interpreter with --python, or constrain the version in pyproject.toml "
        "and run `pypm lock`",
    )


def refuse_unhashed(packages: Iterable[LockedPackage]) -> None:
    """A LockError naming every package whose locked files lack a real sha256 (e.g. `sha256:TODO`)."""
    bad: list[str] = []
    for p in packages:
        if p.has_no_files:
            continue
        files = p.files()
        if not files:
            bad.append(f"{p.name}=={p.version} (no files)")
            continue
        for f in files:
            if not f.has_valid_hash():
                shown = f.sha256 or "missing"
                bad.append(f"{p.name}=={p.version} ({f.filename}: sha256 {shown})")
    if bad:
        raise LockError(
            "pypm.lock has no usable sha256 for: " + "; ".join(bad),
            hint="fill in the hashes with `pypm lock --refresh`",
        )


def make_plan(installed: Mapping[str, Installed] | Iterable[Installed], wanted: Iterable[Wanted], *,
              keep: str = KEEP_NONE) -> Plan:
    """Diff the venv (`installed`) against the target set (`wanted`); both keyed by canonical name.
    What the venv holds and `wanted` does not is removed, or kept as `keep` says (KEEP_*)."""
    if keep not in (KEEP_NONE, KEEP_FOREIGN, KEEP_ALL):
        raise ValueError(f"unknown keep mode {keep!r}")
    have = {canonical_name(i.name): i for i in (installed.values() if isinstance(installed, Mapping) else installed)}
    install: list[Wanted] = []
    replace: list[tuple[Installed, Wanted]] = []
    unchanged: list[Wanted] = []
    want_names: set[str] = set()
    for w in sorted(wanted, key=lambda w: w.name):
        n = canonical_name(w.name)
        want_names.add(n)
        cur = have.get(n)
        if cur is None:
            install.append(w)
        elif (cur.version != w.version and w.kind != "editable") or not cur.complete or cur.token != w.token:
            # (An editable project's version may be computed at build time, e.g. from git:
            # its token, the hash of its build inputs, says whether it changed.)
            replace.append((cur, w))
        else:
            unchanged.append(w)
    remove: list[Installed] = []
    kept: list[Installed] = []
    for n, i in sorted(have.items()):
        if n not in want_names:
            # (token None: no pypm_source.json, so not installed by pypm. A half-installed or
            # damaged dist is never kept: nothing could use it, and an interrupted install of
            # pypm's own has no token yet either.)
            keeps = i.complete and (keep == KEEP_ALL or (keep == KEEP_FOREIGN and i.token is None))
            (kept if keeps else remove).append(i)
    return Plan(tuple(install), tuple(remove), tuple(replace), tuple(unchanged), tuple(kept))


def _why(cur: Installed, new: Wanted) -> str:
    if not cur.complete:
        return "incomplete or modified install"
    if cur.version != new.version:
        return f"{cur.version} -> {new.version}"
    return "different file"


def format_plan(plan: Plan, versions: Mapping[str, str] | None = None) -> str:
    """The plan as text, one line per change, for `pypm sync --dry-run`. `versions`: a version to
    show instead of the locked one (the project's, when its backend computes it: locked as 0)."""
    versions = versions or {}
    kept = (f" Kept, as the selection does not ask for them: {', '.join(f'{i.name}=={i.version}' for i in plan.kept)}."
            if plan.kept else "")
    if plan.is_noop:
        return f"Nothing to do: {len(plan.unchanged)} packages already match the lock.{kept}"
    lines: list[str] = []
    for w in plan.install:
        how = {"sdist": " (build from source)", "editable": " (editable)",
               "directory": " (build from its directory)", "git": " (build from its git commit)"}.get(w.kind, "")
        lines.append(f" + {w.name}=={versions.get(w.name, w.version)}{how}")
    for cur, w in plan.replace:
        lines.append(f" ~ {w.name}=={versions.get(w.name, w.version)} ({_why(cur, w)})")
    for i in plan.remove:
        lines.append(f" - {i.name}=={i.version}")
    summary = (f"Would install {len(plan.install)}, replace {len(plan.replace)}, remove {len(plan.remove)}; "
               f"{len(plan.unchanged)} unchanged.{kept}")
    return "\n".join([summary, *lines])
