"""sync._HoldBack: which wheels wait for a dominant network download, and in what order they go."""

from __future__ import annotations

from pypm.sync import _HoldBack


def _run(network_sizes: dict[str, int], total: int, landing: list[str]) -> list[list[str]]:
    """The unpacks started after each wheel in `landing` lands, one list per landing."""
    started: list[str] = []
    hb = _HoldBack(lambda sha, path: started.append(sha), network_sizes, total=total)
    out = []
    for sha in landing:
        before = len(started)
        hb(sha, f"/cache/{sha}.whl")
        out.append(started[before:])
    return out


def test_small_wheels_wait_for_the_dominant_download_which_goes_first():
    steps = _run({"big": 60, "a": 10, "b": 10}, total=100, landing=["a", "b", "big", "c"])
    assert steps == [[], [], ["big", "a", "b"], ["c"]]


def test_half_the_bytes_is_enough_to_dominate():
    assert _run({"big": 50, "a": 50}, total=100, landing=["a", "big"]) == [[], ["big", "a"]]


def test_nothing_waits_when_no_download_has_half_the_bytes():
    # the web stack: the biggest download is a quarter of the bytes
    assert _run({"big": 25, "a": 20, "b": 20}, total=100, landing=["a", "b", "big"]) == [["a"], ["b"], ["big"]]


def test_a_local_file_never_makes_others_wait():
    # torch from find-links: 183 of 195 MB, but copied, not downloaded (not among the network sizes)
    assert _run({"sympy": 6}, total=195, landing=["sympy", "torch"]) == [["sympy"], ["torch"]]


def test_nothing_to_fetch_or_unknown_sizes_hold_nothing_back():
    assert _run({}, total=0, landing=["a"]) == [["a"]]
    assert _run({"a": 0, "b": 0}, total=0, landing=["a", "b"]) == [["a"], ["b"]]
