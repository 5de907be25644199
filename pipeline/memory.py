"""Handing freed memory back to the system during a long run (glibc's allocator).

A backlog run loads and drops large things in turn (the language identifier, the two
embedding models, each chunk's rows); glibc keeps what Python and the engines free in its
heaps unless told otherwise, so the next load stacks on top of memory nobody uses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

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


_MADV_DONTNEED = 4  # madvise(2) advice number on Linux


def drop_mapped_file_pages(folder: str | Path) -> int:
    """Drop this process's resident pages of the read-only file mappings under ``folder``
    (OpenVINO maps its cached model blob and reads all of it while importing); the bytes
    advised. The data stays in the file and the page cache: a page read again faults back in,
    so nothing can be lost, and writable mappings are never touched. A no-op off Linux."""
    libc = _glibc()
    if libc is None:
        return 0
    prefix = str(Path(folder).resolve())
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.readlines()
    except OSError:
        return 0
    dropped = 0
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or "w" in parts[1] or not parts[5].strip().startswith(prefix + "/"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start),
                        _MADV_DONTNEED) == 0:
            dropped += end - start
    return dropped
