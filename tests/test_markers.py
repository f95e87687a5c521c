"""The marker algebra: markers as sets of environments, written back as short markers."""

from __future__ import annotations

import itertools

import pytest
from packaging.markers import Marker

from pypm.markers import IMPLS, PLATFORMS, PY_POINTS, Universe, strip_extra

U39 = Universe(">=3.9")


def envs(u: Universe):
    """Every grid point of `u` as a PEP 508 environment (for checking against packaging itself)."""
    for i in u.allowed_py:
        minor, patch = PY_POINTS[i]
        for (sp, ps, osn, mach), (impl, pimpl) in itertools.product(PLATFORMS, IMPLS):
            yield {"python_version": f"3.{minor}", "python_full_version": f"3.{minor}.{patch}",
                   "sys_platform": sp, "platform_system": ps, "os_name": osn, "platform_machine": mach,
                   "implementation_name": impl, "platform_python_implementation": pimpl, "extra": ""}


MARKERS = [
    'python_version < "3.11"',
    'python_version >= "3.10" and sys_platform == "win32"',
    'python_version < "3.10" or sys_platform == "win32"',
    'sys_platform != "darwin" and platform_machine == "x86_64"',
    'python_full_version >= "3.9.1" and python_full_version < "3.11.4"',
    'implementation_name == "pypy" or os_name == "nt"',
    'python_version != "3.10"',
    'platform_system == "Linux" and (python_version == "3.9" or python_version == "3.12")',
    'python_version == "3.11" and sys_platform == "linux" and platform_machine == "x86_64"',
    'platform_python_implementation == "CPython" and python_version >= "3.13"',
]


@pytest.mark.parametrize("marker", MARKERS)
def test_compile_agrees_with_packaging_and_to_marker_round_trips(marker):
    bits = U39.bits(marker)
    m = Marker(marker)
    # Bit by bit against packaging's own evaluation: the set is exactly where the marker holds.
    for k, env in enumerate(envs(U39)):
        i = U39.allowed_py[k // 12]
        point = i * 12 + k % 12
        assert bool(bits >> point & 1) == m.evaluate(env), (marker, env)
    written = U39.to_marker(bits)
    assert written is not None
    assert U39.bits(written) == bits, (marker, written)


def test_short_forms_for_lock_markers():
    assert U39.to_marker(U39.bits('python_version < "3.11"')) == 'python_version < "3.11"'
    assert U39.to_marker(U39.bits('python_version <= "3.10"')) == 'python_version < "3.11"'
    assert U39.to_marker(U39.bits('sys_platform == "win32" or sys_platform == "linux"')) == \
        'sys_platform != "darwin"'
    assert U39.to_marker(U39.bits('python_version == "3.10"')) == 'python_version == "3.10"'
    assert U39.to_marker(U39.full) is None


def test_requires_python_prunes_and_bounds_are_free_outside_it():
    assert U39.bits('python_version < "3.8"') == 0
    assert U39.bits('python_version >= "3.8"') == U39.full
    # Below 3.9 nothing exists, so "3.9 <= x < 3.11" is written as just the upper bound.
    assert U39.to_marker(U39.bits('python_version >= "3.9" and python_version < "3.11"')) == \
        'python_version < "3.11"'
    u = Universe(">=3.9,<3.13")
    assert u.to_marker(u.bits('python_version >= "3.11"')) == 'python_version >= "3.11"'


def test_set_operations_give_satisfiability_and_disjointness():
    a = U39.bits('python_version < "3.10"')
    b = U39.bits('python_version >= "3.10"')
    assert a & b == 0 and a | b == U39.full
    assert U39.bits('sys_platform == "win32" and sys_platform == "linux"') == 0
    assert (U39.full & ~a) == b


def test_extra_is_a_parameter_and_strip_extra_removes_it():
    m = 'extra == "socks" and python_version < "3.11"'
    assert U39.bits(m) == 0
    assert U39.bits(m, extra="socks") == U39.bits('python_version < "3.11"')
    assert U39.bits('extra == "Socks_X"', extra="socks-x") == U39.full  # PEP 685 normalisation
    assert strip_extra(m) == 'python_version < "3.11"'
    assert strip_extra('extra == "a"') is None
    assert strip_extra('(extra == "a" or extra == "b") and os_name == "nt"') == 'os_name == "nt"'


def test_variables_outside_the_universe_are_true_and_flagged_inexact():
    info = U39.compile('platform_release >= "5" and sys_platform == "linux"')
    assert not info.exact
    assert info.bits == U39.bits('sys_platform == "linux"')
    assert U39.compile('sys_platform == "linux"').exact


@pytest.mark.parametrize("filename,where", [
    ("a-1-py3-none-any.whl", None),
    ("a-1-cp311-cp311-manylinux_2_17_x86_64.whl",
     'python_version == "3.11" and implementation_name == "cpython" and sys_platform == "linux" '
     'and platform_machine == "x86_64"'),
    ("a-1-cp39-abi3-win_amd64.whl",
     'implementation_name == "cpython" and sys_platform == "win32" and platform_machine == "AMD64"'),
    ("a-1-cp312-cp312-macosx_11_0_universal2.whl",
     'python_version == "3.12" and implementation_name == "cpython" and sys_platform == "darwin"'),
    ("a-1-py310-none-any.whl", 'python_version >= "3.10"'),
])
def test_wheel_tags_map_to_environments(filename, where):
    assert U39.to_marker(U39.wheel_bits(filename)) == where


def test_wheel_for_platforms_outside_the_universe_is_nowhere():
    assert U39.wheel_bits("a-1-cp311-cp311-manylinux_2_17_i686.whl") == 0
    assert U39.wheel_bits("a-1-cp27-cp27m-win_amd64.whl") == 0


def test_admits_checks_requires_python_over_a_whole_range():
    assert U39.admits(">=3.9", U39.full)
    assert not U39.admits(">=3.10", U39.full)
    assert U39.admits(">=3.10", U39.bits('python_version >= "3.10"'))
    assert U39.describe_python(U39.bits('python_version < "3.11"')) == "3.9 - 3.10"


def test_to_marker_round_trips_random_combinations():
    import random

    rng = random.Random(1234)
    atoms = ['python_version < "3.10"', 'python_version >= "3.12"', 'python_full_version < "3.11.4"',
             'python_version == "3.10"', 'sys_platform == "win32"', 'sys_platform == "darwin"',
             'platform_machine == "aarch64"', 'platform_machine == "arm64"', 'implementation_name == "pypy"',
             'os_name == "nt"', 'python_full_version >= "3.9.3"']
    for u in (U39, Universe(">=3.8,<3.14"), Universe(">=3.10.2")):
        for _ in range(150):
            bits = 0
            for _ in range(rng.randint(1, 3)):
                term = u.full
                for a in rng.sample(atoms, rng.randint(1, 3)):
                    b = u.bits(a)
                    term &= b if rng.random() < 0.7 else (u.full & ~b)
                bits |= term
            written = u.to_marker(bits)
            if bits == u.full:
                assert written is None
            elif bits:
                assert u.bits(written) == bits, written


def test_host_bits_is_the_running_interpreter_and_its_platform_row() -> None:
    import os
    import sys

    u = Universe(">=3.0")
    point, row = u.host_bits()
    if sys.platform != "linux" or os.uname().machine not in {p[3] for p in PLATFORMS}:
        assert (point, row) == (0, 0)
        return
    assert bin(point).count("1") == 1 and point & row == point
    py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    machine = os.uname().machine
    assert u.wheel_bits(f"x-1.0-{py}-{py}-manylinux_2_17_{machine}.whl") & point
    assert u.wheel_bits("x-1.0-py3-none-any.whl") & point
    assert not u.wheel_bits(f"x-1.0-{py}-{py}-win_amd64.whl") & row
    # A requires-python that leaves the running Python out: no point, the platform's row stays.
    other = Universe(f">{sys.version_info[0]}.{sys.version_info[1] + 1}")
    point2, row2 = other.host_bits()
    assert point2 == 0 and row2 and not row2 & ~other.full
