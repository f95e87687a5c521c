"""A fresh venv as a plan: worked out once from a sync's recipe, kept in the cache, run as links.

`make_plan` works the venv a recipe (`pypm.syncrecipe`) builds out with the usual code --
`venv.skeleton`, then `installer.plan_install` for each store entry, and the directories
state.json watches (`venvstate.record_dirs`) -- as plain data: every directory, link and file,
relative to the venv, split in two halves that share no directory. Once it has built a venv,
`keep_plan` keeps it beside the recipe (`<key>.plan`, marshal) with a copy of each file the wheels
bring that is not in the store (RECORD, INSTALLER, REQUESTED, pypm_source.json, scripts:
`<key>.<id>.<n>.blob`, the files that run wrote), which later venvs hard-link instead of creating. `load_plan` trusts a kept plan only for the recipe
bytes it was made from (sha256), by the same pypm and PLAN_FORMAT, for the same interpreter binary
(path, resolved path, size and mtime: the interpreter cache's key), when the cache user owns it
and nobody else can write it, when none of its paths leaves the venv, the store or the cache's
tree files, when its copies are as it wrote them (owner, mode, size, none written since the plan)
and no store entry was unpacked again since. `run_plan` builds the venv with nothing imported but
os, marshal and time: `os.mkdir` per directory and `os.link` per file relative to
directory descriptors, after checking every store file against its entry's tree file as
`Cache.unpack` does; anything unexpected removes what was built.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not from typing (~2 ms on this path)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Iterable

__all__ = ["PLAN_FORMAT", "make_plan", "load_plan", "keep_plan", "run_plan"]

PLAN_FORMAT = 4  # bump when what a plan holds, or how it is run, changes: old plans are remade
_BUILDING_MARKER = ".pypm-building"  # venv.BUILDING_MARKER (a test ties them; venv imports dataclasses)


def _store_entries(cache_root: str, wheels: list[list[str]]) -> list[tuple[list[str], str, Any]] | None:
    """[(wheel, store entry, its manifest)] when every entry is in the store with its manifest;
    None sends the sync down the full path."""
    from .wheeltree import manifest_path, read_manifest

    out = []
    for w in wheels:
        sha = w[2]
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            return None
        entry = os.path.join(cache_root, "unpacked", sha[:2], sha)
        mpath = manifest_path(entry)
        manifest = read_manifest(mpath) if mpath is not None else None
        if manifest is None or not os.path.isdir(entry):
            return None
        out.append((w, entry, manifest))
    return out


def _interpreter_key(exe: str) -> list[Any] | None:
    """What identifies the interpreter binary (as the interpreter cache keys its answers)."""
    try:
        st = os.stat(exe)  # follows symlinks: a re-pointed python3 link changes the key
    except OSError:
        return None
    return [os.path.abspath(exe), os.path.realpath(exe), st.st_size, st.st_mtime_ns]


def _outside(rels: list[str], symlinks: Iterable[str] = ()) -> bool:
    """Is any of these relative paths empty, absolute, holding a `..` component, or below one of
    `symlinks` (the venv's own: lib64, bin/python; a path through one lands where it points)?
    (A few scans of one string, not a check per path: torch's plan holds 12k.)"""
    joined = "\0" + "\0".join(rels) + "\0"
    return "\0/" in joined or "\0\0" in joined or "\0..\0" in joined.replace("/", "\0") \
        or any(f"\0{s.rstrip('/')}/" in joined for s in symlinks)


def _planned_for(p: Any, venv: str, entry: str) -> bool:
    """An install plan made for this venv from this store entry: its dist-info lands in `venv`,
    and it links from `entry` (its first link tells: a plan links from one tree only)."""
    return p.dst_info.startswith(venv + "/") and (not p.links or p.links[0][0].startswith(entry + "/"))


def make_plan(cache_root: str, recipe: dict[str, Any], recipe_sha: str, venv: str,
              known: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Work out the venv the recipe builds (with the full machinery: packaging is still not
    imported), or None when an entry is missing or the interpreter no longer matches.
    `known`: install plans already worked out (sha256 -> installer.InstallPlan, by the sync that
    just installed those wheels into this venv from these entries): used instead of planning
    those wheels again."""
    from pathlib import Path

    from . import __version__
    from .errors import PypmError
    from .installer import plan_install
    from .interpreter import query_interpreter
    from .venv import VenvLayout, skeleton
    from .venvstate import record_dirs

    state = recipe["state"]
    exe = (state.get("interpreter") or {}).get("executable")
    if not isinstance(exe, str):
        return None
    key = _interpreter_key(exe)
    entries = _store_entries(cache_root, recipe["wheels"])
    if key is None or entries is None:
        return None
    try:
        interp = query_interpreter(exe)  # from its cache, keyed by the executable's size and mtime
        if interp.version_str != state["interpreter"].get("version"):
            return None
        layout = VenvLayout.for_interpreter(Path(venv), interp)
        dirs, symlinks, files = skeleton(layout, interp, os.path.basename(venv))
        wheels = []
        for (name, version, sha, filename), entry, manifest in entries:
            p = (known or {}).get(sha)
            if p is None or not _planned_for(p, venv, entry):
                p = plan_install(layout, Path(entry), wheel_filename=filename, wheel_sha256=sha)
            wheels.append((name, version, sha, filename, entry, manifest, p))
    except (PypmError, OSError, ValueError):
        return None
    pre = venv + "/"
    if not all(d.startswith(pre) for d in dirs):
        return None
    base_dirs = list(dirs)  # the skeleton's: made first, before the work is split in two
    made = set(dirs)
    chmods: list[str] = []
    links = []
    checks = []
    held = []
    for name, version, sha, filename, entry, manifest, p in wheels:
        for d in p.dirs:  # each with its parents, parents first
            chain = []
            while d not in made and d.startswith(pre):
                chain.append(d)
                made.add(d)
                d = os.path.dirname(d)
            dirs += reversed(chain)
        files += [(dst, data) for dst, data, _mode in p.writes]
        chmods += p.chmods
        epre = entry + "/"
        if not all(src.startswith(epre) for src, _ in p.links):
            return None
        links.append((entry, [src[len(epre):] for src, _ in p.links], [dst for _, dst in p.links]))
        tree = os.path.join(cache_root, "wheels", sha[:2], sha, _tree_name())
        checks.append((entry, tree, [row[0] for row in manifest["files"]]))
        files.append((p.dst_info + "/RECORD", p.record_bytes()))
        # The directories of RECORD's paths, RECORD's own row included (as venvstate reads it)
        held.append((p.dst_info[len(pre):], {r[0].rpartition("/")[0] for r in p.record}
                     | {os.path.basename(p.dst_info)}))
    modes = {dst: mode for *_, p in wheels for dst, _, mode in p.writes}
    modes.update({p.dst_info + "/RECORD": 0o644 for *_, p in wheels})
    kept = {d[len(pre):] for d in modes}  # files the wheels bring: linked from the plan's own copies
    paths = [*dirs, *(d for _, d in symlinks), *(d for d, _ in files), *chmods]
    paths += [d for _, _, dsts in links for d in dsts]
    if not all(x.startswith(pre) for x in paths) or len(set(d for d, _ in files)) != len(files):
        return None
    sites = sorted({os.path.relpath(str(d), venv) for d in (layout.purelib, layout.platlib)})
    rel = len(pre)
    base_dirs, groups = _split(venv, base_dirs, dirs[len(base_dirs):], files, modes, links, chmods)
    checks = _compact(groups, checks)
    n = 0
    # each dist's RECORD, made after both halves: no file it lists is newer than it
    records: list[tuple[Any, ...]] = []
    for g in groups:  # [(name, path in the venv, bytes, mode)]: see keep_plan
        g["blobs"] = []
        for row in g["files"]:
            if row[0] in kept:
                (records if row[0].endswith("/RECORD") else g["blobs"]).append((f"{n}.blob", *row))
                n += 1
        g["files"] = [row for row in g["files"] if row[0] not in kept]
    return {
        "format": PLAN_FORMAT, "pypm": __version__, "recipe-sha256": recipe_sha, "interpreter": key,
        "venv": venv, "describe": interp.describe(),
        "dirs": [d[rel:] for d in base_dirs],  # made before the two halves start
        "symlinks": [(t, d[rel:]) for t, d in symlinks],
        "groups": groups,
        "records": records,
        "checks": checks,
        "site-dirs": sites,
        "dists": sorted(info for info, _ in held),
        "state-dirs": record_dirs(venv, sites, held),
        "added": sorted((name, version) for name, version, *_ in wheels),
    }


def _compact(groups: list[dict[str, Any]], checks: list[Any]) -> list[Any]:
    """The plan's two biggest parts made smaller (torch: 2.8 -> 0.9 MB, the strings of 15 k
    files twice fewer), for load_plan's marshal and its path checks (~25 ms of torch's warm sync
    into a fresh venv): a link list whose every destination is one prefix plus its source keeps
    the prefix alone (a wheel's files land under site-packages/ as they sit in its entry), and
    an entry's check keeps only the files it does not link (those are checked as the links'
    sources). Returns the checks: [(entry, tree file, the files it does not link)]."""
    linked: dict[str, set[str]] = {}
    for g in groups:
        out = []
        for entry, srcs, dsts in g["links"]:
            linked.setdefault(entry, set()).update(srcs)
            pre = next((d[:len(d) - len(s)] for s, d in zip(srcs, dsts)
                        if s and d.endswith(s) and d[:len(d) - len(s)].endswith("/")), None)
            if pre is None:
                out.append((entry, srcs, dsts))
                continue
            same = [d == pre + s for s, d in zip(srcs, dsts)]
            out.append((entry, [s for s, y in zip(srcs, same) if y], pre))
            if not all(same):  # the rest (a wheel's .data files: scripts, headers, data) as they are
                out.append((entry, [s for s, y in zip(srcs, same) if not y], [d for d, y in zip(dsts, same) if not y]))
        g["links"] = out
    return [(entry, tree, [k for k in keys if k not in linked.get(entry, ())]) for entry, tree, keys in checks]


def _check_keys(plan: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """The plan's checks with every file again: [(entry, tree file, each file of the entry it
    uses)] (see _compact)."""
    srcs_of: dict[str, list[str]] = {}
    for g in plan["groups"]:
        for entry, srcs, _ in g["links"]:
            srcs_of.setdefault(entry, []).extend(srcs)
    return [(entry, tree, srcs_of.get(entry, []) + extra) for entry, tree, extra in plan["checks"]]


def _prefix_ok(pre: Any, srcs: list[str], symlinks: list[str]) -> bool:
    """Whether `pre` + each of `srcs` (each already a safe relative path: _outside) stays in the
    venv and below none of its `symlinks`: `pre` is "" or a safe relative directory path ending in
    "/", and neither it nor any path it makes with a source goes through a symlink."""
    if type(pre) is not str or (pre and (not pre.endswith("/") or _outside([pre[:-1]]))):
        return False
    for link in symlinks:
        below = link.rstrip("/") + "/"
        if pre.startswith(below):
            return False
        if below.startswith(pre) and any(s.startswith(below[len(pre):]) for s in srcs):
            return False
    return True


def _split(venv: str, base_dirs: list[str], dirs: list[str], files: list[tuple[str, bytes]], modes: dict[str, int],
           links: list[tuple[str, list[str], list[str]]], chmods: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The venv's directories, files and links in two independent halves (once built on two threads): every
    path goes with the first component below the deepest directory made beforehand (the skeleton's,
    and a package too big for one half: torch), so a half only fills the directories it made.
    Returns (the directories made beforehand, parents first; the two halves)."""
    pre = venv + "/"
    base = list(base_dirs)
    in_base = set(base)
    dir_set = set(dirs)
    while True:
        anchors = {venv, *base}
        memo: dict[str, str] = {}

        def key(path: str) -> str:
            # The path's ancestor (or itself) whose parent is made beforehand; per directory, once.
            parent = path[:path.rindex("/")]
            if parent in anchors:
                return path
            k = memo.get(parent)
            if k is None:
                if not parent.startswith(pre):
                    raise ValueError(path)
                k = memo[parent] = key(parent)
            return k

        # Costs on this kind of file system: a mkdir ~100 us, a new file ~150 us, a hard link ~8 us.
        cost: dict[str, int] = {}
        for d in dirs:
            if d not in in_base:
                cost[key(d)] = cost.get(key(d), 0) + 12
        for d, _ in files:
            cost[key(d)] = cost.get(key(d), 0) + 18
        for _, _, dsts in links:
            for d in dsts:
                cost[key(d)] = cost.get(key(d), 0) + 1
        big = max(cost, key=lambda k: cost[k], default=None)
        if big is None or cost[big] * 2 <= sum(cost.values()) or big not in dir_set or big in in_base:
            break
        base.append(big)  # made beforehand; what it holds is split one level down
        in_base.add(big)
    dirs = [d for d in dirs if d not in in_base]
    load = [0, 0]
    half: dict[str, int] = {}
    for k in sorted(cost, key=lambda k: (-cost[k], k)):
        i = 0 if load[0] <= load[1] else 1
        half[k] = i
        load[i] += cost[k]
    rel = len(pre)
    out: list[dict[str, Any]] = [{"dirs": [], "links": [], "chmods": [], "files": []} for _ in range(2)]
    for d in dirs:
        out[half[key(d)]]["dirs"].append(d[rel:])
    for entry, srcs, dsts in links:
        parts: list[tuple[list[str], list[str]]] = [([], []), ([], [])]
        for s, d in zip(srcs, dsts):
            i = half[key(d)]
            parts[i][0].append(s)
            parts[i][1].append(d[rel:])
        for i in (0, 1):
            if parts[i][0]:
                out[i]["links"].append((entry, *parts[i]))
    for d in chmods:
        out[half[key(d)]]["chmods"].append(d[rel:])
    for d, data in files:  # in plan order: each RECORD after its dist's other files
        out[half[key(d)]]["files"].append((d[rel:], data, modes.get(d, -1)))
    return base, out


def _tree_name() -> str:
    from .wheeltree import TREE_NAME

    return TREE_NAME


def load_plan(path: str, recipe_sha: str, venv: str, exe: Any, cache_root: str) -> dict[str, Any] | None:
    """The plan at `path` when it may be used for this recipe, venv and interpreter."""
    import marshal

    from .fastpath import read_own_file

    got = read_own_file(path)  # not the cache user's own regular file: never trusted
    if got is None:
        return None
    data, st = got
    try:
        plan = marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return None
    from . import __version__

    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT or plan.get("pypm") != __version__ \
            or plan.get("recipe-sha256") != recipe_sha or plan.get("venv") != venv:
        return None
    if not isinstance(exe, str) or plan.get("interpreter") != _interpreter_key(exe):
        return None
    try:
        rels = [*plan["dirs"], *(d for _, d in plan["symlinks"]), *plan["state-dirs"]]
        groups = plan["groups"]
        if len(groups) != 2:
            return None
        store, trees = os.path.join(cache_root, "unpacked", ""), os.path.join(cache_root, "wheels", "")
        entries = [entry for g in groups for entry, _, _ in g["links"]]
        if not all(type(e) is str and e.startswith(store) for e in entries) or not all(
                type(e) is str and e.startswith(store) and type(t) is str and t.startswith(trees)
                for e, t, _ in plan["checks"]):
            return None  # links only from the store, checks only against its tree files
        rels += [e[len(store):] for e in entries] + [t[len(trees):] for _, t, _ in plan["checks"]]
        symlinks = [d for _, d in plan["symlinks"]]
        for g in groups:
            rels += g["dirs"]
            rels += g["chmods"]
            rels += [d for d, _, _ in g["files"]]
            rels += [d for _, d in g["blobs"]]
            for _entry, srcs, dsts in g["links"]:
                rels += srcs
                if type(dsts) is list:
                    if len(dsts) != len(srcs):
                        return None
                    rels += dsts
                elif not _prefix_ok(dsts, srcs, symlinks):
                    return None  # (a prefix: each destination is it plus the source)
        rels += [d for _, d in plan["records"]]
        checked = {row[0] for row in plan["blob-check"]}
        if not all(name in checked for g in groups for name, _ in g["blobs"]) \
                or not all(name in checked for name, _ in plan["records"]):
            return None  # every copy linked is one checked (_kept_files_intact)
        for _entry, _tree, keys in plan["checks"]:
            rels += keys
        if not all(type(r) is str for r in rels) or _outside(rels, symlinks):
            return None
        if not _kept_files_intact(plan, path, st.st_mtime_ns):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    plan["syncs"] = os.path.dirname(path)
    return plan


def _kept_files_intact(plan: dict[str, Any], path: str, made: int) -> bool:
    """The plan's own copies of the files the wheels bring (RECORD, INSTALLER, scripts...; see
    _save_plan) are as it wrote them: each the cache user's, not group/other-writable, with its
    size and mode, and none written since the plan (which is written after them). And no store
    entry was unpacked again after the plan was made (its tree file is newer): the linked
    RECORDs would then be older than the files they list, which the full sync's check
    (venvstate.files_present) takes for files modified since their install."""
    syncs, key = os.path.dirname(path), os.path.basename(path)[: -len(".plan")]
    prefix = plan["blob-prefix"]
    if type(prefix) is not str or "/" in prefix or not prefix.startswith(key + "."):
        return False
    stat, uid = os.stat, os.getuid()
    try:
        for name, size, mode in plan["blob-check"]:
            if type(name) is not str or "/" in name:
                return False
            # lstat: a symlink is not the plan's copy (stat would judge its target; os.link follows it)
            st = os.lstat(f"{syncs}/{prefix}{name}")
            if st.st_mode & 0o170000 != 0o100000 or st.st_uid != uid or st.st_mode & 0o7777 != mode \
                    or mode & 0o022 or st.st_size != size or st.st_mtime_ns > made:
                return False
    except OSError:
        return False
    for _entry, tree, _keys in plan["checks"]:
        try:
            if stat(tree).st_mtime_ns > made:
                return False
        except OSError:
            pass  # no tree file: no verdict (as wheeltree.store_written_since)
    return True


def keep_plan(path: str, plan: dict[str, Any], venv: str, *, write_missing: bool = True) -> bool:
    """Keep `plan` (just run: see make_plan) at `path`, and beside it a copy of each file the wheels
    bring that is not in the store (`<key>.<id>.<n>.blob`: RECORD, INSTALLER, REQUESTED,
    pypm_source.json, scripts), which later venvs hard-link instead of creating the file (here a
    new file costs ~10-20x a link). The copies are the files this run wrote into `venv`, linked
    (each read back and compared with what was written), else written; all before the plan, so none
    is newer than it. `write_missing=False`: a file that cannot be linked keeps nothing (the full
    sync's call: its venv may be elsewhere). Best effort: a cache that cannot be written only loses
    the plan. True when the plan was kept."""
    import marshal

    from .fastpath import replace_file

    syncs, key = os.path.dirname(path), os.path.basename(path)[: -len(".plan")]
    prefix = f"{key}.{os.urandom(4).hex()}."
    copies = [*(b for g in plan["groups"] for b in g["blobs"]), *plan["records"]]  # RECORDs last
    kept = dict(plan, groups=[dict(g, blobs=[(n, d) for n, d, _, _ in g["blobs"]]) for g in plan["groups"]],
                records=[(n, d) for n, d, _, _ in plan["records"]],
                **{"blob-prefix": prefix, "blob-check": [(n, len(data), mode) for n, _, data, mode in copies]})
    made = []
    try:
        for n, d, data, mode in copies:
            name = f"{syncs}/{prefix}{n}"
            try:
                os.link(f"{venv}/{d}", name)
                made.append(name)
                with open(name, "rb") as rf:
                    same = os.fstat(rf.fileno()).st_mode & 0o7777 == mode and rf.read() == data
                if not same:  # changed since this run wrote it: nothing is kept
                    raise ValueError(d)
            except OSError:  # (another file system than the venv's): a copy of its own
                if not write_missing:
                    raise
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
                made.append(name)
                try:
                    os.fchmod(fd, mode)
                    with open(fd, "wb", closefd=False) as wf:
                        wf.write(data)
                finally:
                    os.close(fd)
        replace_file(path, marshal.dumps(kept), 0o600)
    except (OSError, ValueError):
        for name in made:
            try:
                os.unlink(name)
            except OSError:
                pass
        return False
    try:  # the copies of the plans this one replaces
        for fn in os.listdir(syncs):
            if fn.startswith(key + ".") and fn.endswith(".blob") and not fn.startswith(prefix):
                os.unlink(f"{syncs}/{fn}")
    except OSError:
        pass
    return True


# --------------------------------------------------------------------------- running it

class _StoreEntryWritten(Exception):
    """A store entry was written since it was unpacked (or is gone): the full sync repairs it."""


def _check_entries(checks: list[Any], stop: list[bool]) -> None:
    """As wheeltree.store_written_since, for every entry: one stat per file against the mtime of
    the wheel's tree file, which `Cache.unpack` writes after extracting (no tree file: no verdict)."""
    stat = os.stat
    for entry, tree, keys in checks:
        try:
            ref = stat(tree).st_mtime_ns
        except OSError:
            continue
        if stop:
            return
        fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for k in keys:  # (a vanished file: OSError, as bad)
                if stat(k, dir_fd=fd).st_mtime_ns > ref:
                    raise _StoreEntryWritten(entry)
        finally:
            os.close(fd)


# A plan checking at least this many store files checks them in a child process while this one
# links (_start_check): torch's 15 k stats took ~20 ms of a ~105 ms build on the critical path
# (-> ~86 ms), the web stack's 3.7 k ~3 ms of 43 (-> 40). The canary's 1.7 k gained nothing: the
# fork and the wait cost what the overlap saves.
FORK_CHECK_MIN = 2000


def _start_check(checks: list[Any]) -> int:
    """Start _check_entries(checks) in a forked child: its pid, for _finish_check. -1: the checks
    were run here instead (few files, or no fork), and passed. A process, not a thread: a thread's
    stats would take turns with the links on one GIL (the hand-offs cost more than they overlap;
    see run_plan). The fast path forks before any thread exists, so the child is a safe copy."""
    import sys

    threading = sys.modules.get("threading")
    if sum(len(keys) for _, _, keys in checks) < FORK_CHECK_MIN or (
            threading is not None and threading.active_count() > 1):  # (a fork copies no other thread)
        _check_entries(checks, [])
        return -1
    try:
        pid = os.fork()
    except OSError:  # (a process limit): the same checks, here
        _check_entries(checks, [])
        return -1
    if pid == 0:  # the child: its verdict as its exit status, nothing else (no atexit, no buffers)
        code = 1
        try:
            _check_entries(checks, [])
            code = 0
        except _StoreEntryWritten:
            code = 3
        except BaseException:  # noqa: BLE001 - any failure is "not checked": the parent refuses the venv
            pass
        finally:
            os._exit(code)
    return pid


def _finish_check(pid: int, *, kill: bool = False) -> None:
    """Wait for the child of _start_check; raise _StoreEntryWritten unless it found every file as
    unpacked. `kill`: the build failed, the verdict no longer matters."""
    if pid < 0:
        return
    if kill:
        import signal

        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _, status = os.waitpid(pid, 0)  # (PEP 475: retried after a signal's handler)
    if not kill and os.waitstatus_to_exitcode(status) != 0:
        raise _StoreEntryWritten(f"the check of the store (exit status {os.waitstatus_to_exitcode(status)})")


def _fill(group: dict[str, Any], venv: str, vfd: int, kept: tuple[str, str, int], stop: list[bool]) -> None:
    """One half of the venv (see _split): its directories, links, scripts made executable, files."""
    mkdir, link = os.mkdir, os.link
    for d in group["dirs"]:
        mkdir(d, dir_fd=vfd)
    _place_copies(group["blobs"], venv, vfd, kept)
    for entry, srcs, dsts in group["links"]:
        if stop:
            return
        efd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if type(dsts) is str:  # (one prefix for all: see _compact)
            dsts = [dsts + s for s in srcs]
        try:
            # The hot loop: one system call per file, relative to two directory descriptors.
            for s, d in zip(srcs, dsts):
                link(s, d, src_dir_fd=efd, dst_dir_fd=vfd)
        except OSError:  # another file system, too many links: the installer's fallbacks
            from .installer import _Linker

            place = _Linker(None).place  # (replaces what is linked already with the same file)
            for s, d in zip(srcs, dsts):
                place(f"{entry}/{s}", f"{venv}/{d}")
        finally:
            os.close(efd)
    for d in group["chmods"]:
        if not os.stat(d, dir_fd=vfd).st_mode & 0o100:  # (a hard link shares the mode: harmless)
            os.chmod(f"{venv}/{d}", 0o755)
    for d, data, mode in group["files"]:
        _write(vfd, d, data, mode)


def _place_copies(rows: list[Any], venv: str, vfd: int, kept: tuple[str, str, int]) -> None:
    """The files the wheels bring besides the store's: linked from the kept plan's copies
    (keep_plan), or, for a plan just made, written."""
    syncs, prefix, sfd = kept
    if sfd < 0:
        for _name, d, data, mode in rows:
            _write(vfd, d, data, mode)
        return
    try:
        for name, d in rows:
            os.link(prefix + name, d, src_dir_fd=sfd, dst_dir_fd=vfd)
    except OSError:  # another file system, too many links: the installer's fallbacks
        from .installer import _Linker

        place = _Linker(None).place  # (replaces what is linked already with the same file)
        for name, d in rows:
            place(f"{syncs}/{prefix}{name}", f"{venv}/{d}")


def run_plan(plan: dict[str, Any], venv: str, state: dict[str, Any]) -> None:
    """Build `venv` (which does not exist) as the plan says: the store checked, the skeleton, then
    its two halves, all on this one thread.

    Until stop 29 the halves ran on two threads while a third checked the store: on the machine
    of that time, two threads made the links in ~70% of one's wall time. On this one (2 vCPUs,
    tmpfs) the three threads' GIL hand-offs cost more than they overlapped (40 k futex calls for
    torch's 15 k links); one thread, the bench's pypm, 7 rounds alternating right after
    `rm -rf .venv`: the canary 48 -> 41 ms, the web stack 72 -> 60 ms, torch 204 -> 139 ms. A big
    plan's store check runs in a forked child meanwhile (_start_check), with no GIL to share;
    the venv is complete only once it has passed."""
    os.mkdir(venv)  # fails if another process made it meanwhile: nothing of ours to remove
    stop: list[bool] = []  # (_fill and _check_entries stop when it is set: kept for their callers)
    checking = -1  # the pid of the store's check (_start_check), until it is finished
    vfd = os.open(venv, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    sfd = -1
    try:
        if plan.get("syncs"):
            sfd = os.open(plan["syncs"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _write(vfd, _BUILDING_MARKER, f"{os.getpid()}\n".encode(), -1)
        # The store checked while the venv is linked: nothing is complete (the building marker
        # stays) until the check has passed, and a failed one discards what was linked.
        checking = _start_check(_check_keys(plan))
        sites = set(plan["site-dirs"])
        for d in plan["dirs"]:
            os.mkdir(d, dir_fd=vfd)
            if d in sites:
                # Each package's directories in a block group of their own, as sync does
                # (pypm.fsalloc): the venv this one replaces was usually deleted moments ago, and
                # every inode it freed would be skipped, one look-up each, by each mkdir and link
                # made beside it. Web stack, A B A B x10 right after `rm -rf .venv`: 130.6 -> 86.2 ms.
                from .fsalloc import spread_subdirs

                spread_subdirs(f"{venv}/{d}")
        for target, d in plan["symlinks"]:
            os.symlink(target, d, dir_fd=vfd)
        first, second = plan["groups"]
        kept = (plan.get("syncs", ""), plan.get("blob-prefix", ""), sfd)
        _fill(first, venv, vfd, kept, stop)
        _fill(second, venv, vfd, kept, stop)
        _place_copies(plan["records"], venv, vfd, kept)
        pid, checking = checking, -1
        _finish_check(pid)
        os.mkdir(".pypm", dir_fd=vfd)
        _write(vfd, ".pypm/state.json", _state_json(plan, venv, vfd, state), 0o644)
        os.unlink(_BUILDING_MARKER, dir_fd=vfd)
    except BaseException:
        _finish_check(checking, kill=True)
        os.close(vfd)
        vfd = -1
        if os.path.lexists(os.path.join(venv, _BUILDING_MARKER)):
            from .venv import discard_half_built

            discard_half_built(venv)
        else:
            try:
                os.rmdir(venv)  # the marker could not be written: nothing else was
            except OSError:
                pass
        raise
    finally:
        if vfd >= 0:
            os.close(vfd)
        if sfd >= 0:
            os.close(sfd)


def _write(dir_fd: int, rel: str, data: bytes, mode: int) -> None:
    """A new file (O_EXCL: the venv is new); mode -1: the umask's, as open() makes it, else
    exactly `mode` (the installer's: a script's x bit must not depend on the umask)."""
    fd = os.open(rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666 if mode < 0 else mode,
                 dir_fd=dir_fd)
    try:
        if mode >= 0:
            os.fchmod(fd, mode)
        if data:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _state_json(plan: dict[str, Any], venv: str, vfd: int, state: dict[str, Any]) -> bytes:
    """state.json as venvstate.write_state(venv, state + installed_record(...)) writes it: the
    dist-infos and directories come from the plan, their mtimes from one stat each."""
    from .fastpath import json_dumps
    from .venvstate import _dist_infos, _outlast_the_tick, installed_record

    sites, dists = plan["site-dirs"], plan["dists"]
    if _dist_infos(venv, sites) != dists:  # a wheel that brings a second .dist-info: derive it all
        installed = installed_record(venv, [os.path.join(venv, s) for s in sites])
    else:
        stat = os.stat
        records = []
        for d in dists:
            st = stat(d + "/RECORD", dir_fd=vfd)
            records.append([st.st_size, st.st_mtime_ns])
        dirs = {d: stat(d, dir_fd=vfd).st_mtime_ns for d in plan["state-dirs"]}
        _outlast_the_tick(max([*dirs.values(), *(m for _, m in records)], default=0))
        installed = {"site-dirs": sites, "dists": dists, "records": records, "dirs": dirs}
    return (json_dumps(dict(state, installed=installed)) + "\n").encode("utf-8")
