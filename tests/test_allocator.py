"""distill.allocator: importing the engine keeps glibc from faulting freed tensor blocks back in on every
forward pass (measured by `eupe bench allocator`), and leaves an allocator the user chose alone."""

from __future__ import annotations

import platform

import pytest

from distill import allocator
from workbench.bench.allocator import bench_allocator, format_allocator_bench


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(allocator.OPT_OUT, raising=False)
    system, tuned = bench_allocator(["semantic"], count=8, side=128, repeats=1)
    assert (system.allocator, tuned.allocator) == ("system", "tuned")
    assert system.faults > 10_000, "the system allocator no longer faults each pass: the tuning may be moot"
    assert tuned.faults < 0.05 * system.faults, (tuned, system)
    assert all(r.wall_s > 0 and r.user_s > 0 for r in (system, tuned))
    table = format_allocator_bench([system, tuned], 8, 128).splitlines()
    assert table[-1].split()[:2] == ["semantic", "tuned"] and table[-1].endswith("x")


def test_an_allocator_the_user_chose_is_left_alone(monkeypatch: pytest.MonkeyPatch):
    calls = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a: calls.append(a))
    chosen = (
        (allocator.OPT_OUT, "1"),
        ("MALLOC_ARENA_MAX", "2"),
        ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
        ("LD_PRELOAD", "/x/libjemalloc.so"),
    )
    for name, value in chosen:
        with monkeypatch.context() as env:
            env.setenv(name, value)
            assert allocator.keep_freed_blocks() is False, name
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", ""))
    assert allocator.keep_freed_blocks() is False
    assert calls == []
