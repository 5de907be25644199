"""Handing freed memory back to the system during a long run (glibc's allocator).

A backlog run loads and drops large things in turn (the language identifier, the two
embedding models, each chunk's rows); glibc keeps what Python and the engines free in its
heaps unless told otherwise, so the next load stacks on top of memory nobody uses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# glibc gives each thread that allocates its own heap ("arena") and keeps what it frees there;
# the fetch and extract pools' arenas held ~130 MB for the rest of a backlog run (measured:
# peak 882 -> 722 MB on 1,000 items, docs/performance.md). Two arenas serve this process.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt(3) parameter number in glibc's malloc.h


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (malloc tuning applies), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "gnu_get_libc_version") else None


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's per-thread heaps before the run starts its thread pools (as
    ``MALLOC_ARENA_MAX`` would); a no-op where the C library is not glibc."""
    libc = _glibc()
    return bool(libc and libc.mallopt(_M_ARENA_MAX, arenas))


def return_free_memory() -> None:
    """Hand the heap's free pages back to the system: after fetch has parsed every feed
    (26k items: ~75 MB free but kept), after each chunk, and when a model is dropped, so the
    next model's memory does not stack on top of it."""
    if libc := _glibc():
        libc.malloc_trim(0)
