"""Real wheels and sdists built in-process (zipfile/tarfile), byte-identical on every build."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import re
import tarfile
import textwrap
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "build_wheel",
    "build_sdist",
    "wheel_metadata",
    "sdist_metadata",
    "record_hash",
    "sha256_file",
    "wheel_filename",
    "sdist_filename",
    "DistFactory",
]

# Wheels may not hold timestamps before 1980 (zip's epoch); a fixed one makes builds reproducible.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# 2020-01-01: a fixed mtime for tar members and the gzip header.
_TAR_MTIME = 1577836800

_DATA_SCHEMES = ("scripts", "data", "headers", "purelib", "platlib")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _under(name: str) -> str:
    """The distribution name as it appears in file names (PEP 427 / binary distribution spec)."""
    return _canon(name).replace("-", "_")


def record_hash(data: bytes) -> str:
    """`sha256=<urlsafe b64, no padding>` as RECORD files spell it."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def wheel_filename(name: str, version: str, tag: str = "py3-none-any", build_tag: str | None = None) -> str:
    parts = [_under(name), version]
    if build_tag:
        parts.append(build_tag)
    parts.append(tag)
    return "-".join(parts) + ".whl"


def sdist_filename(name: str, version: str) -> str:
    return f"{_under(name)}-{version}.tar.gz"


def _metadata(
    name: str,
    version: str,
    *,
    metadata_version: str,
    requires_dist: Iterable[str],
    requires_python: str | None,
    provides_extra: Iterable[str],
    summary: str | None = None,
) -> bytes:
    lines = [
        f"Metadata-Version: {metadata_version}",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {summary or f'{name}, a test distribution built by pypm tests'}",
    ]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    extras = list(provides_extra)
    # Extras named in markers must be declared; add the ones the caller forgot.
    for req in requires_dist:
        for m in re.finditer(r"""extra\s*==\s*['"]([^'"]+)['"]""", req):
            if m.group(1) not in extras:
                extras.append(m.group(1))
    for extra in extras:
        lines.append(f"Provides-Extra: {extra}")
    for req in requires_dist:
        lines.append(f"Requires-Dist: {req}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _zip_write(zf: zipfile.ZipFile, arcname: str, data: bytes, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_ZIP_TIME)
    info.external_attr = (0o100000 | mode) << 16  # regular file + permissions
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, so external_attr is honoured by extractors
    zf.writestr(info, data)


def _as_bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


def build_wheel(
    dest_dir: Path | str,
    name: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    provides_extra: Iterable[str] = (),
    modules: Mapping[str, str | bytes] | None = None,
    entry_points: Mapping[str, Mapping[str, str]] | None = None,
    data: Mapping[str, bytes] | None = None,
    tag: str = "py3-none-any",
    build_tag: str | None = None,
    unsafe: Mapping[str, bytes] | None = None,
    record_override: str | None = None,
    bad_record_hash_for: str | None = None,
    metadata_version: str = "2.1",
) -> Path:
    """Write a spec-compliant wheel into dest_dir and return its path.

    modules: path inside the wheel -> content (default: `<name_underscored>/__init__.py` with
      `__version__`). data: `<scheme>/<path>` -> bytes, stored under `<name>-<ver>.data/`.
    unsafe: raw extra members written verbatim (e.g. "../evil", "/abs"); they are listed in
      RECORD with correct hashes, so only their *path* is wrong.
    record_override: RECORD's whole text. bad_record_hash_for: a member path whose RECORD hash
      is replaced by a wrong (but well-formed) one.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    under = _under(name)
    dist_info = f"{under}-{version}.dist-info"
    data_dir = f"{under}-{version}.data"
    requires_dist = list(requires_dist)

    members: list[tuple[str, bytes, int]] = []
    if modules is None:
        modules = {f"{under}/__init__.py": f'__version__ = "{version}"\n'}
    for path, content in sorted(modules.items()):
        members.append((path, _as_bytes(content), 0o644))
    for path, content in sorted((data or {}).items()):
        scheme = path.split("/", 1)[0]
        if scheme not in _DATA_SCHEMES:
            raise ValueError(f"data path {path!r} must start with one of {_DATA_SCHEMES}")
        mode = 0o755 if scheme == "scripts" else 0o644
        members.append((f"{data_dir}/{path}", content, mode))
    for path, content in sorted((unsafe or {}).items()):
        members.append((path, content, 0o644))

    purelib = tag.split("-")[-1] == "any"
    py, abi, plat = tag.split("-")
    wheel_lines = ["Wheel-Version: 1.0", "Generator: pypm-tests (0)", f"Root-Is-Purelib: {'true' if purelib else 'false'}"]
    for p in py.split("."):
        for a in abi.split("."):
            for pl in plat.split("."):
                wheel_lines.append(f"Tag: {p}-{a}-{pl}")
    if build_tag:
        wheel_lines.append(f"Build: {build_tag}")
    members.append(
        (
            f"{dist_info}/METADATA",
            _metadata(
                name,
                version,
                metadata_version=metadata_version,
                requires_dist=requires_dist,
                requires_python=requires_python,
                provides_extra=provides_extra,
            ),
            0o644,
        )
    )
    members.append((f"{dist_info}/WHEEL", ("\n".join(wheel_lines) + "\n").encode(), 0o644))
    if entry_points:
        ep = io.StringIO()
        for group, items in entry_points.items():
            ep.write(f"[{group}]\n")
            for key, value in items.items():
                ep.write(f"{key} = {value}\n")
            ep.write("\n")
        members.append((f"{dist_info}/entry_points.txt", ep.getvalue().encode(), 0o644))
    members.append((f"{dist_info}/top_level.txt", f"{under}\n".encode(), 0o644))

    record_path = f"{dist_info}/RECORD"
    if record_override is not None:
        record = record_override.encode("utf-8")
    else:
        rows = []
        for path, content, _ in members:
            h = record_hash(content)
            if path == bad_record_hash_for:
                h = record_hash(content + b"tampered")
            rows.append(f"{path},{h},{len(content)}")
        if bad_record_hash_for is not None and bad_record_hash_for not in {m[0] for m in members}:
            raise ValueError(f"bad_record_hash_for={bad_record_hash_for!r} is not a member of the wheel")
        rows.append(f"{record_path},,")
        record = ("\n".join(rows) + "\n").encode("utf-8")
    members.append((record_path, record, 0o644))

    out = dest / wheel_filename(name, version, tag, build_tag)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, content, mode in members:
            _zip_write(zf, path, content, mode)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out)
    return out


def wheel_metadata(wheel: Path | str) -> bytes:
    """The METADATA bytes of a wheel (what a PEP 658 `.metadata` file holds)."""
    with zipfile.ZipFile(wheel) as zf:
        for n in zf.namelist():
            parts = n.split("/")
            if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                return zf.read(n)
    raise ValueError(f"{wheel}: no .dist-info/METADATA")


def sdist_metadata(sdist: Path | str) -> bytes:
    """The top-level PKG-INFO bytes of an sdist (.tar.gz or .zip)."""
    s = str(sdist)
    if s.endswith(".zip"):
        with zipfile.ZipFile(s) as zf:
            for n in zf.namelist():
                if n.count("/") == 1 and n.endswith("/PKG-INFO"):
                    return zf.read(n)
    else:
        with tarfile.open(s) as tf:
            for m in tf.getmembers():
                if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"):
                    f = tf.extractfile(m)
                    assert f is not None
                    return f.read()
    raise ValueError(f"{sdist}: no top-level PKG-INFO")


_C_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}

static PyMethodDef methods[] = {
    {"add", add, METH_VARARGS, "Add two integers."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
"""


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_sdist(
    dest_dir: Path | str,
    name: str,
    version: str,
    *,
    requires_dist: Iterable[str] = (),
    requires_python: str | None = None,
    c_extension: bool = False,
    build_requires: Iterable[str] = ("setuptools>=68",),
    extra_files: Mapping[str, str | bytes] | None = None,
    setup_py: str | None = None,
    provides_extra: Iterable[str] = (),
) -> Path:
    """Write a real setuptools sdist `<name>-<ver>.tar.gz` into dest_dir and return its path.

    The package `<name_underscored>` (under src/) has `__version__`; with c_extension=True it
    also has a C module `<pkg>._speedups` with `add(a, b)`. PKG-INFO (metadata 2.2) lists
    Requires-Dist so it can be read without building. extra_files: relative path -> content,
    added (or replacing) inside the sdist's top directory. setup_py: a setup.py's text.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    under = _under(name)
    top = f"{under}-{version}"
    requires_dist = list(requires_dist)
    build_requires = list(build_requires)
    extras = list(provides_extra)

    deps = "".join(f"    {_toml_str(r)},\n" for r in requires_dist if "extra ==" not in r.replace("'", '"'))
    pyproject = [
        "[build-system]",
        f"requires = [{', '.join(_toml_str(r) for r in build_requires)}]",
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {_toml_str(name)}",
        f"version = {_toml_str(version)}",
        'description = "a test sdist built by pypm tests"',
    ]
    if requires_python:
        pyproject.append(f"requires-python = {_toml_str(requires_python)}")
    pyproject.append(f"dependencies = [\n{deps}]")
    # Requirements with `extra == "x"` markers become optional-dependencies tables.
    opt: dict[str, list[str]] = {e: [] for e in extras}
    for r in requires_dist:
        m = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", r)
        if m:
            req = re.sub(r"""\s*;\s*extra\s*==\s*['"][^'"]+['"]\s*$""", "", r)
            opt.setdefault(m.group(1), []).append(req)
    if opt:
        pyproject.append("")
        pyproject.append("[project.optional-dependencies]")
        for extra, reqs in opt.items():
            pyproject.append(f"{extra} = [{', '.join(_toml_str(r) for r in reqs)}]")
    pyproject += ["", "[tool.setuptools.packages.find]", 'where = ["src"]', ""]

    files: dict[str, bytes] = {
        "pyproject.toml": "\n".join(pyproject).encode(),
        f"src/{under}/__init__.py": f'__version__ = "{version}"\n'.encode(),
        "PKG-INFO": _metadata(
            name,
            version,
            metadata_version="2.2",
            requires_dist=requires_dist,
            requires_python=requires_python,
            provides_extra=extras,
        ),
    }
    if c_extension:
        files[f"src/{under}/_speedups.c"] = _C_SOURCE.encode()
        if setup_py is None:
            setup_py = textwrap.dedent(
                f"""\
                from setuptools import Extension, setup

                setup(ext_modules=[Extension("{under}._speedups", ["src/{under}/_speedups.c"])])
                """
            )
    if setup_py is not None:
        files["setup.py"] = setup_py.encode()
    for path, content in (extra_files or {}).items():
        files[path] = _as_bytes(content)

    out = dest / sdist_filename(name, version)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs: set[str] = set()
        for path in sorted(files):
            parts = path.split("/")[:-1]
            for i in range(len(parts) + 1):
                d = "/".join([top, *parts[:i]])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, _TAR_MTIME
                    tf.addfile(ti)
            content = files[path]
            ti = tarfile.TarInfo(f"{top}/{path}")
            ti.size, ti.mode, ti.mtime = len(content), 0o644, _TAR_MTIME
            tf.addfile(ti, io.BytesIO(content))
    gz = io.BytesIO()
    # mtime=0 and no file name in the gzip header: the same input gives the same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0) as g:
        g.write(raw.getvalue())
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(gz.getvalue())
    tmp.replace(out)
    return out


class DistFactory:
    """Builds wheels and sdists into one directory (the `dists` fixture): `dists.wheel("a", "1.0")`."""

    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def wheel(self, name: str, version: str, **kwargs: object) -> Path:
        return build_wheel(self.dir, name, version, **kwargs)  # type: ignore[arg-type]

    def sdist(self, name: str, version: str, **kwargs: object) -> Path:
        return build_sdist(self.dir, name, version, **kwargs)  # type: ignore[arg-type]

    def __call__(self, name: str, version: str, **kwargs: object) -> Path:
        return self.wheel(name, version, **kwargs)

    def files(self) -> list[Path]:
        return sorted(p for p in self.dir.iterdir() if p.is_file())
