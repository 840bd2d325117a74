"""glibc's allocator kept from returning tensor-sized blocks to the kernel after every use.

By default glibc serves a block above its mmap threshold (128 KiB, raised adaptively up to 32 MiB) with a
fresh mmap and unmaps it on free, and trims the heap's top above 128 KiB. A CPU forward pass of a
convolutional expert allocates and frees activations of tens of MiB per layer, so each one is faulted in
and zeroed by the kernel again: measured on an idle 2-core AMD EPYC, the semantic expert on 64 views spent
more time in the kernel than in its own arithmetic (sys 2.86 s, user 2.31 s) and ran 2.9x slower than with
the blocks kept (`eupe bench allocator` measures it on this machine). Keeping them changes no result, only
where the memory comes from; the process's resident size stays at its peak instead of shrinking.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 2**30  # blocks below 1 GiB come from the heap and are reused
TRIM_THRESHOLD = 2**31 - 1  # the heap's free top is kept up to 2 GiB (mallopt takes a C int)
OPT_OUT = "EUPE_SYSTEM_MALLOC"  # set to 1 to leave the allocator as the system configured it


def keep_freed_blocks() -> bool:
    """Tune glibc's malloc of this process (see the module docstring); True if it was tuned.

    Left alone: other C libraries, `EUPE_SYSTEM_MALLOC=1`, and a process whose allocator the user chose
    already (glibc's MALLOC_* variables or malloc tunables, or jemalloc/tcmalloc/mimalloc in LD_PRELOAD).
    """
    env = os.environ
    chosen = (
        any(name.startswith("MALLOC_") for name in env)
        or "malloc" in env.get("GLIBC_TUNABLES", "")
        or any(lib in env.get("LD_PRELOAD", "") for lib in ("jemalloc", "tcmalloc", "mimalloc"))
    )
    if chosen or env.get(OPT_OUT) == "1" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the symbols the process has loaded: glibc's own mallopt, no library search
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
