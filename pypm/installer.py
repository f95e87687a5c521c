"""Install an unpacked wheel into a venv by linking its files, and uninstall one from its RECORD.

Spec: the binary distribution format (PEP 427/491) and the recording of installed projects
(PEP 376, 610, 627). Files come from the cache's unpacked store, already verified against
the wheel's RECORD; they are hard-linked (else reflinked, else copied). A file that pypm
changes (a `#!python` script) is always written fresh, never modified in place, because the
source may be a hard link into the cache.

Crash safety (kill -9 at any point): before the first file is linked, a journal
`<venv>/.pypm/journal/<name>.json` lists every path the install will create; the dist's
`RECORD` is written last (atomically) and the journal removed after it. So a dist whose
journal exists, or whose dist-info has no RECORD, is incomplete: `installed_distributions`
reports it with `complete=False` and `uninstall` removes every file either source names.
Uninstall removes the dist-info directory (with RECORD) last, so an interrupted uninstall
is finished by the next one.
"""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

from .wheelfile import manifest_of_dir, parse_record, record_hash, safe_name
from .errors import InstallError
from .fastpath import sha256
from .venv import VenvLayout

# csv, io, shutil, subprocess, fcntl and the Merkle tree code are imported where used: a fresh venv
# built by the entry point's fast path (pypm.syncrecipe) needs none of them.

__all__ = ["InstalledDist", "install_wheel", "uninstall", "installed_distributions", "LinkMode",
           "SOURCE_FILE", "JOURNAL_DIR"]

LinkMode = Literal["hardlink", "reflink", "copy"]
SOURCE_FILE = "pypm_source.json"  # in the dist-info: {"filename": ..., "sha256": ...} of the wheel installed
JOURNAL_DIR = Path(".pypm") / "journal"
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_SCHEMES = ("purelib", "platlib", "scripts", "data", "headers")
_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)  # PEP 508


@dataclass(frozen=True)
class InstalledDist:
    name: str  # canonical
    version: str
    dist_info: Path | None
    source_sha256: str | None  # sha256 of the wheel it was installed from (None: not installed by pypm)
    source_filename: str | None
    installer: str | None
    complete: bool  # False: interrupted install; uninstall and install again

    @property
    def editable(self) -> bool:
        if self.dist_info is None:
            return False
        try:
            d = json.loads((self.dist_info / "direct_url.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(d.get("dir_info", {}).get("editable"))


# --------------------------------------------------------------------------- linking

class _Linker:
    """Puts a file at dst: hardlink, else reflink (FICLONE), else copy; falls back once and remembers."""

    def __init__(self, mode: LinkMode | None) -> None:
        self.mode: LinkMode = mode or "hardlink"

    def place(self, src: str | Path, dst: str | Path) -> None:
        if self.mode == "hardlink":
            try:
                os.link(src, dst)  # the common case, a path not there yet: no unlink first
                return
            except OSError:
                pass  # it exists, or links do not work here: the careful path below decides
        _unlink_existing(dst)
        if self.mode == "hardlink":
            try:
                os.link(src, dst)
                return
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                    raise
                self.mode = "reflink"  # another filesystem: every later file would fail the same way
        if self.mode == "reflink":
            if _reflink(src, dst):
                return
            self.mode = "copy"
        import shutil

        shutil.copyfile(src, dst)
        shutil.copymode(src, dst)


def _reflink(src: str | Path, dst: str | Path) -> bool:
    import fcntl
    import shutil

    try:
        with open(src, "rb") as s, open(dst, "xb") as d:
            try:
                fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
                ok = True
            except OSError:
                ok = False
        if ok:
            shutil.copymode(src, dst)
            return True
        os.unlink(dst)
        return False
    except OSError:
        try:
            os.unlink(dst)
        except FileNotFoundError:
            pass
        return False


def _unlink_existing(p: str | Path) -> None:
    # Never write into an existing file: it may be a hard link into the cache.
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        import shutil

        shutil.rmtree(p)


def _write_new(dst: str | Path, data: bytes, mode: int = 0o644, *, make_parent: bool = True) -> tuple[str, int]:
    _unlink_existing(dst)
    if make_parent:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(dst, mode)  # umask must not strip a script's x bit
    return record_hash(sha256(data).digest()), len(data)


# --------------------------------------------------------------------------- scripts

def _shebang(python: Path) -> bytes:
    exe = str(python)
    # Linux caps a shebang line at 127 bytes and splits it at spaces: fall back to /bin/sh exec
    if len(exe) + 3 > 127 or " " in exe or "\t" in exe:
        quoted = exe.replace("'", "'\"'\"'")
        return f"#!/bin/sh\n'''exec' '{quoted}' \"$0\" \"$@\"\n' '''\n".encode()
    return f"#!{exe}\n".encode()


_ENTRY = re.compile(r"^\s*(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?(\[.*\])?\s*$")


def _entry_points(text: str) -> dict[str, dict[str, str]]:
    """entry_points.txt sections -> {name: value}; parsed by hand (configparser lowercases keys... and is slow)."""
    out: dict[str, dict[str, str]] = {}
    section: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1].strip(), {})
            continue
        if section is not None and "=" in line:
            k, _, v = line.partition("=")
            section[k.strip()] = v.strip()
    return out


def _script_text(python: Path, value: str) -> bytes:
    m = _ENTRY.match(value)
    if not m or not m.group("attr"):
        raise ValueError(f"bad entry point {value!r}")
    module, attr = m.group("module"), m.group("attr")
    head = attr.split(".")[0]
    return _shebang(python) + (
        "# -*- coding: utf-8 -*-\n"
        "import re\n"
        "import sys\n"
        f"from {module} import {head}\n"
        "if __name__ == \"__main__\":\n"
        "    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n"
        f"    sys.exit({attr}())\n"
    ).encode()


# --------------------------------------------------------------------------- install

def _read_wheel_file(info: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        for line in (info / "WHEEL").read_text(encoding="utf-8").splitlines():
            k, sep, v = line.partition(":")
            if sep:
                out[k.strip().lower()] = v.strip()
    except FileNotFoundError:
        raise InstallError(f"{info.name} has no WHEEL file; not a valid wheel") from None
    return out


def _metadata_name_version(info: Path) -> tuple[str, str]:
    name = version = ""
    try:
        with open(info / "METADATA", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                if line.startswith("Name:") and not name:
                    name = line[5:].strip()
                elif line.startswith("Version:") and not version:
                    version = line[8:].strip()
    except FileNotFoundError:
        pass
    if not name or not version:  # fall back on the directory name: {name}-{version}.dist-info
        stem = info.name[: -len(".dist-info")]
        n, _, v = stem.rpartition("-")
        name, version = name or n, version or v
    return name, version


def _rel(path: str | Path, base: str | Path) -> str:
    # Two calls per installed file: a prefix check instead of os.path.relpath, which makes both
    # paths absolute and normalises them every time (a quarter of a warm install's CPU). Names
    # with `..` never get here (refused on unpack and by the planning step).
    p, b = str(path), str(base)
    if p.startswith(b) and p[len(b):len(b) + 1] == "/":
        return p[len(b) + 1:]
    return os.path.relpath(path, base).replace(os.sep, "/")


def canonical_name(name: str) -> str:
    """PEP 503 normalisation, as `pypm.lockfile.canonical_name` (a test ties the two together):
    importing the lock model (dataclasses, tempfile) only for this cost the fast path ~8 ms."""
    return _SEPARATORS.sub("-", name).lower()


_SEPARATORS = re.compile(r"[-_.]+")


def _journal(layout: VenvLayout, name: str) -> Path:
    return layout.root / JOURNAL_DIR / f"{canonical_name(name)}.json"


class InstallPlan:
    """What installing one wheel does, worked out before the venv is touched: `install_wheel` runs
    it, and the fresh-venv fast path (pypm.syncrecipe) keeps a whole venv's plans to run again.
    Plain attributes, not a dataclass: that fast path must not import dataclasses (~10 ms)."""

    __slots__ = ("dist_name", "version", "dst_info", "rec_base", "known_dirs", "dirs", "links", "chmods",
                 "writes", "record")

    def __init__(self, dist_name: str, version: str, dst_info: str, rec_base: str, known_dirs: tuple[str, ...]) -> None:
        self.dist_name, self.version, self.dst_info, self.rec_base = dist_name, version, dst_info, rec_base
        self.known_dirs = known_dirs  # made by create_venv (site-packages, bin): a stat, not a mkdir
        self.dirs: list[str] = []  # every directory a file goes into, in order of first need
        self.links: list[tuple[str, str]] = []  # (store file, venv path): hard links
        self.chmods: list[str] = []  # linked scripts that must be executable
        self.writes: list[tuple[str, bytes, int]] = []  # (venv path, bytes, mode): new files
        self.record: list[tuple[str, str, str]] = []  # RECORD rows, without RECORD's own

    def record_bytes(self, extra: Iterable[tuple[str, str, str]] = ()) -> bytes:
        rows = sorted([*self.record, *extra])
        rows.append((f"{os.path.basename(self.dst_info)}/RECORD", "", ""))
        return _record_text(rows).encode()


def plan_install(layout: VenvLayout, unpacked: Path, *, wheel_filename: str, wheel_sha256: str,
                 direct_url: dict[str, Any] | None = None, requested: bool = True) -> InstallPlan:
    """Every directory, link and file the install of `unpacked` (a store entry) into `layout`
    makes, or InstallError with nothing written: a bad wheel is refused before the venv changes."""
    unpacked = Path(unpacked)
    manifest = _manifest(unpacked, wheel_filename)
    info_name = manifest["dist-info"]
    if not info_name.endswith(".dist-info") or "/" in info_name or not safe_name(info_name):
        raise InstallError(f"{wheel_filename}: not a valid wheel: no .dist-info directory")
    src_info = unpacked / info_name
    wheel_meta = _read_wheel_file(src_info)
    dist_name, version = _metadata_name_version(src_info)
    if not _VALID_NAME.match(dist_name):  # it names paths below (headers dir, journal)
        raise InstallError(f"{wheel_filename}: METADATA names the project {dist_name!r}, which is not a valid name",
                           hint="this wheel is malformed: do not use it")
    root_is_purelib = wheel_meta.get("root-is-purelib", "true").lower() == "true"
    root_dest = layout.purelib if root_is_purelib else layout.platlib
    data_name = info_name[: -len(".dist-info")] + ".data"
    scheme_dirs = {"purelib": layout.purelib, "platlib": layout.platlib, "scripts": layout.scripts,
                   "data": layout.data, "headers": layout.headers / dist_name}

    # From the store entry's manifest (its files with RECORD's hash and size, computed when it was
    # unpacked): no walk of the tree and no RECORD parse per install. Plain strings, not pathlib:
    # a Path per file was the largest share of a warm install's CPU.
    # (src, dst, key in the wheel, kind, RECORD hash, size, RECORD path in the venv or "" to derive)
    rows: list[tuple[str, str, str, str, str, str, str]] = []
    src_root = str(unpacked)
    dest_s = str(root_dest)
    data_prefix = data_name + "/"
    for d in manifest["dirs"]:
        if d.startswith(data_prefix) and d[len(data_prefix):].partition("/")[0] not in _SCHEMES:
            scheme = d[len(data_prefix):].partition("/")[0]
            raise InstallError(f"{wheel_filename}: unknown install scheme {data_name}/{scheme}",
                               hint=f"a wheel's .data directory may hold only {', '.join(_SCHEMES)}")
    info_rows: list[tuple[str, str, str, str, str, str, str]] = []  # linked last: metadata after the code
    info_prefix = info_name + "/"
    for key, h, size in manifest["files"]:
        if not safe_name(key):  # refused on unpack already; a damaged manifest must not reach out either
            raise InstallError(f"{wheel_filename}: {key} would be installed outside the venv",
                               hint="this wheel is malformed or malicious: do not use it")
        if not key.startswith(data_prefix):
            (info_rows if key.startswith(info_prefix) else rows).append(
                (f"{src_root}/{key}", f"{dest_s}/{key}", key, "file", h, size, key))
            continue
        scheme, _, rel = key[len(data_prefix):].partition("/")
        if scheme not in _SCHEMES or not rel:
            raise InstallError(f"{wheel_filename}: unknown install scheme {data_name}/{scheme}",
                               hint=f"a wheel's .data directory may hold only {', '.join(_SCHEMES)}")
        rows.append((f"{src_root}/{key}", f"{scheme_dirs[scheme]}/{rel}", key,
                     "script" if scheme == "scripts" else "file", h, size, ""))
    rows += info_rows
    ep_file = src_info / "entry_points.txt"
    eps = _entry_points(ep_file.read_text(encoding="utf-8")) if ep_file.is_file() else {}
    generated: list[tuple[str, bytes]] = []
    for group in ("console_scripts", "gui_scripts"):
        for script, value in sorted(eps.get(group, {}).items()):
            if "/" in script or "\\" in script or script.startswith(".") or not script:
                raise InstallError(f"{wheel_filename}: entry point name {script!r} is not a plain file name")
            try:
                text = _script_text(layout.python, value)
            except ValueError:  # found while planning: nothing has been written yet
                raise InstallError(f"{wheel_filename}: entry point {script} = {value!r} is malformed",
                                   hint="entry points look like `name = module:function`") from None
            generated.append((f"{layout.scripts}/{script}", text))
    dst_info = f"{root_dest}/{info_name}"
    # Every destination is inside the venv by construction: a scheme directory of the venv (the
    # headers one named by a validated project name) joined with a relative path without `..`.

    rec_base = dest_s  # RECORD paths are relative to the dir holding the dist-info
    plan = InstallPlan(dist_name, version, dst_info, rec_base, (dest_s, str(layout.scripts)))
    seen_dirs: set[str] = set()

    def need_dir(parent: str) -> None:
        if parent not in seen_dirs:
            seen_dirs.add(parent)
            plan.dirs.append(parent)

    python = layout.python
    rewritten = {f"{info_name}/{fn}" for fn in ("RECORD", "INSTALLER", "direct_url.json", "REQUESTED", SOURCE_FILE,
                                                 "RECORD.jws", "RECORD.p7s")}
    record = plan.record
    for src, dst, key, kind, h, size, rec in rows:
        need_dir(dst[:dst.rindex("/")])
        if key in rewritten:
            continue  # rewritten below (RECORD signatures no longer apply to an installed tree)
        if kind == "file" and h:  # the common case, first
            plan.links.append((src, dst))
            record.append((rec or _rel(dst, rec_base), h, size))
            continue
        if kind == "script":
            with open(src, "rb") as f:
                # only a `#!python` script is read whole: a wheel's scripts can be big binaries
                # (ruff's is 23 MB), which are linked as they are
                data = f.read(8)
                if data == b"#!python":
                    data += f.read()
            if data.startswith(b"#!python"):
                nl = data.find(b"\n")
                new = _shebang(python) + (data[nl + 1:] if nl >= 0 else b"")
                plan.writes.append((dst, new, 0o755))
                record.append((_rel(dst, rec_base), _hash(new), str(len(new))))
                continue
            plan.links.append((src, dst))
            plan.chmods.append(dst)
        else:
            plan.links.append((src, dst))
        if not h:  # RECORD hashes of the wheel are what we link (verified on unpack)
            with open(src, "rb") as f:
                data = f.read()
            h, size = _hash(data), str(len(data))
        record.append((_rel(dst, rec_base), h, size))
    for dst, text in generated:
        need_dir(dst[:dst.rindex("/")])
        plan.writes.append((dst, text, 0o755))
        record.append((_rel(dst, rec_base), _hash(text), str(len(text))))
    need_dir(dst_info)
    merkle = {k: manifest[k] for k in ("merkle-root", "wheel-sha256") if isinstance(manifest.get(k), str)}
    extra = {"INSTALLER": b"pypm\n",
             SOURCE_FILE: json.dumps({"filename": wheel_filename, "sha256": wheel_sha256,
                                      **merkle},  # issue 7: the wheel's Merkle root
                                     sort_keys=True).encode() + b"\n"}
    if requested:
        extra["REQUESTED"] = b""
    if direct_url is not None:
        extra["direct_url.json"] = json.dumps(direct_url, sort_keys=True, separators=(",", ":")).encode()
    for fn, data in extra.items():
        plan.writes.append((f"{dst_info}/{fn}", data, 0o644))
        record.append((f"{info_name}/{fn}", _hash(data), str(len(data))))
    return plan


def _hash(data: bytes) -> str:
    return record_hash(sha256(data).digest())


def install_wheel(layout: VenvLayout, unpacked: Path, *, wheel_filename: str, wheel_sha256: str,
                  link_mode: LinkMode | None = None, direct_url: dict[str, Any] | None = None,
                  compile_bytecode: bool = False, requested: bool = True, journal: bool = True,
                  plans: dict[str, InstallPlan] | None = None) -> InstalledDist:
    """Install the unpacked wheel tree `unpacked` (from `Cache.unpack`) into the venv `layout`.

    The caller uninstalls any other version of the same dist first. `direct_url` (PEP 610) is
    written as direct_url.json for non-index sources. Raises InstallError; on failure the
    journal stays, so the next sync sees the dist as incomplete and repairs it.

    `journal=False`: the venv is being built and is removed whole if anything fails (it carries
    `venv.BUILDING_MARKER` until the sync is done), so no per-dist journal is needed -- on the
    web stack it was 3 of the 8 file operations per wheel, and file creation is what costs here.

    `plans`: the install plan is put there under `wheel_sha256` (sync hands them to the
    fresh-venv recipe, pypm.venvplan, which would otherwise work each one out again).
    """
    # 1. plan every destination before touching the venv: a bad wheel is refused with nothing written.
    plan = plan_install(layout, unpacked, wheel_filename=wheel_filename, wheel_sha256=wheel_sha256,
                        direct_url=direct_url, requested=requested)
    dist_name, version = plan.dist_name, plan.version
    if plans is not None:
        plans[wheel_sha256] = plan

    # 2. journal: everything this install may create
    journal_path = _journal(layout, dist_name)
    if journal:
        if not os.path.isdir(journal_path.parent):  # a stat: mkdir on an existing dir costs more here
            journal_path.parent.mkdir(parents=True, exist_ok=True)
        planned = [dst for _, dst in plan.links] + [dst for dst, _, _ in plan.writes] + [plan.dst_info]
        _atomic_write(journal_path, json.dumps({"name": dist_name, "version": version, "wheel": wheel_filename,
                                                "paths": planned}).encode())

    # 3. place files (RECORD last)
    linker = _Linker(link_mode)
    try:
        # Directories known to exist: a mkdir that fails with EEXIST was ~0.25 ms each on this
        # machine's filesystem, and every wheel used to pay several (site-packages, bin, its
        # dist-info for each file written there).
        made_dirs = {d for d in plan.known_dirs if os.path.isdir(d)}
        for d in plan.dirs:
            if d not in made_dirs:
                os.makedirs(d, exist_ok=True)
        place = linker.place
        for src, dst in plan.links:
            place(src, dst)
        for dst in plan.chmods:
            if not os.stat(dst).st_mode & 0o100:  # (a hard link shares the mode: harmless)
                os.chmod(dst, 0o755)
        for dst, data, mode in plan.writes:
            _write_new(dst, data, mode, make_parent=False)
        extra: list[tuple[str, str, str]] = []
        if compile_bytecode:
            rec_base = Path(plan.rec_base)
            extra = _compile(layout, [Path(rec_base, r[0]) for r in plan.record if r[0].endswith(".py")], rec_base)
        # 0o644 whatever the umask, as the other files written here: a venv built from a kept plan
        # links a copy of this RECORD made with that mode (pypm.venvplan), and must be the same venv.
        _atomic_write(Path(plan.dst_info) / "RECORD", plan.record_bytes(extra), 0o644)
    except OSError as e:
        raise InstallError(f"cannot install {wheel_filename} into {layout.root}: {e}",
                           hint="check free space and permissions, then run `pypm sync` again") from e
    if journal:
        journal_path.unlink()
    return InstalledDist(canonical_name(dist_name), version, Path(plan.dst_info), wheel_sha256, wheel_filename,
                         "pypm", True)


def _record_text(rows: list[tuple[str, str, str]]) -> str:
    """RECORD as csv.writer writes it (minimal quoting, "\\n" line ends), joined by hand: paths
    almost never need quoting, and the csv module was a tenth of a big wheel's install."""
    text = "".join([f"{p},{h},{s}\n" for p, h, s in rows])
    # Nothing to quote when no field holds a quote or a CR, and the only commas and newlines
    # are the separators (2 and 1 per row).
    if '"' not in text and "\r" not in text and text.count(",") == 2 * len(rows) \
            and text.count("\n") == len(rows):
        return text
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _manifest(unpacked: Path, wheel_filename: str) -> dict[str, Any]:
    """The store entry's install manifest (written when it was unpacked), else derived from the
    tree and RECORD (an entry unpacked by an older pypm, or a tree outside the store) and, for a
    store entry, kept for the next install."""
    from .wheeltree import manifest_path, read_manifest, write_manifest

    mpath = manifest_path(unpacked)
    if mpath is not None:
        m = read_manifest(mpath)
        if m is not None:
            return m
    try:
        m = manifest_of_dir(unpacked, wheel_filename)
    except ValueError as e:
        raise InstallError(f"{wheel_filename}: not a valid wheel: {e}") from None
    if mpath is not None:
        from .wheeltree import install_record

        m.update(install_record(unpacked))
        try:
            write_manifest(mpath, m)
        except OSError:
            pass  # a read-only cache: derived again next time
    return m


def _inside(p: Path, root: Path) -> bool:
    try:
        Path(os.path.abspath(p)).relative_to(root)
        return True
    except ValueError:
        return False


def _atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    # No fsync: the journal and RECORD guard against a killed process (kill -9, Ctrl-C), and
    # the page cache outlives a process. Two fsyncs per wheel were a third of a warm sync's
    # time; after a power loss the venv is rebuilt by the next sync, as with uv and pip.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if mode is not None:
            os.fchmod(f.fileno(), mode)
    os.replace(tmp, path)


def _compile(layout: VenvLayout, files: list[Path], rec_base: Path) -> list[tuple[str, str, str]]:
    """Byte-compile `files` with the venv's own interpreter; RECORD rows (no hash, as PEP 376 allows)."""
    if not files:
        return []
    import subprocess

    proc = subprocess.run([str(layout.python), "-I", "-m", "compileall", "-q", "-j0", "-i", "-"],
                          input="\n".join(map(str, files)), text=True, capture_output=True,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"})
    if proc.returncode not in (0, 1):  # 1: a file did not compile (e.g. py2-only test data); pip ignores that too
        raise InstallError(f"byte-compiling failed: {proc.stderr.strip()[-500:]}")
    rows = []
    for f in files:
        pyc = f.parent / "__pycache__" / f"{f.stem}.{layout.cache_tag}.pyc"
        if pyc.exists():
            rows.append((_rel(pyc, rec_base), "", ""))
    return rows


# --------------------------------------------------------------------------- query

def _dist_info_dirs(layout: VenvLayout) -> list[Path]:
    out: list[Path] = []
    for d in dict.fromkeys([layout.purelib, layout.platlib]):
        try:
            out += [p for p in d.iterdir() if p.name.endswith(".dist-info") and p.is_dir()]
        except FileNotFoundError:
            pass
    return sorted(out)


def installed_distributions(layout: VenvLayout) -> dict[str, InstalledDist]:
    """Every dist in the venv by canonical name, including interrupted installs (complete=False)."""
    out: dict[str, InstalledDist] = {}
    for info in _dist_info_dirs(layout):
        name, version = _metadata_name_version(info)
        src_sha = src_fn = None
        try:
            src = json.loads((info / SOURCE_FILE).read_text())
            src_sha, src_fn = src.get("sha256"), src.get("filename")
        except (OSError, ValueError):
            pass
        try:
            inst: str | None = (info / "INSTALLER").read_text().strip()
        except OSError:
            inst = None
        key = canonical_name(name)
        complete = (info / "RECORD").is_file() and not _journal(layout, name).exists()
        prev = out.get(key)
        if prev is not None:  # two dist-infos of one name: treat the pair as broken, so it is reinstalled
            complete = False
        out[key] = InstalledDist(key, version, info, src_sha, src_fn, inst, complete)
    jdir = layout.root / JOURNAL_DIR
    if jdir.is_dir():
        for j in jdir.glob("*.json"):
            key = j.stem
            if key not in out:
                version = _read_journal(j).get("version", "")
                version = version if isinstance(version, str) else ""
                out[key] = InstalledDist(key, version, None, None, None, None, False)
            elif out[key].complete:
                d = out[key]
                out[key] = InstalledDist(d.name, d.version, d.dist_info, d.source_sha256, d.source_filename,
                                         d.installer, False)
    return out


def _read_journal(path: Path) -> dict[str, Any]:
    """An install journal's content, {} when it is unreadable or not a JSON object (a damaged
    journal still marks its dist incomplete; it just names no extra paths)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- uninstall

def uninstall(layout: VenvLayout, name: str) -> list[Path]:
    """Remove dist `name` (files from its RECORD and any install journal, their __pycache__,
    directories left empty, then the dist-info). Missing files are fine. Returns what was removed."""
    key = canonical_name(name)
    root = Path(os.path.abspath(layout.root))
    targets: set[Path] = set()
    infos = [i for i in _dist_info_dirs(layout) if canonical_name(_metadata_name_version(i)[0]) == key]
    for info in infos:
        rec = info / "RECORD"
        if rec.is_file():
            try:
                rows = parse_record(rec.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                rows = []
            for path, _, _ in rows:
                targets.add(Path(os.path.normpath(info.parent / path)))
    journal = _journal(layout, key)
    if journal.is_file():
        paths = _read_journal(journal).get("paths", [])
        targets |= {Path(p) for p in (paths if isinstance(paths, list) else []) if isinstance(p, str)}
    removed: list[Path] = []
    parents: set[Path] = set()
    info_set = set(infos) | {t for t in targets if t.name.endswith(".dist-info")}
    for t in sorted(targets):
        if not _inside(t, root) or t == root:
            continue  # never follow a RECORD outside the venv
        if any(t == i or i in t.parents for i in info_set):
            continue  # the dist-info goes last
        if t.is_dir() and not t.is_symlink():
            continue
        try:
            t.unlink()
            removed.append(t)
        except FileNotFoundError:
            pass
        parents.add(t.parent)
        if t.suffix == ".py":
            cache = t.parent / "__pycache__"
            for pyc in cache.glob(f"{t.stem}.*.pyc") if cache.is_dir() else ():
                pyc.unlink(missing_ok=True)
                removed.append(pyc)
            parents.add(cache)
    for info in sorted(info_set):
        if info.is_dir() and _inside(info, root):
            import shutil

            shutil.rmtree(info)
            removed.append(info)
    _prune_empty_dirs(parents, {layout.root, layout.purelib, layout.platlib, layout.scripts, layout.root / "include"})
    journal.unlink(missing_ok=True)
    return removed


def _prune_empty_dirs(dirs: Iterable[Path], keep: set[Path]) -> None:
    keep = {Path(os.path.abspath(k)) for k in keep}
    for d in sorted(set(dirs), key=lambda p: -len(p.parts)):
        while d not in keep and len(d.parts) > 1:
            try:
                d.rmdir()
            except OSError:
                break  # not empty (or gone): stop walking up
            d = d.parent
