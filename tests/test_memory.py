"""pipeline.memory.drop_mapped_file_pages: resident pages of read-only file mappings go,
their data stays readable, and writable mappings are left alone."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import pytest

from pipeline.memory import _glibc, drop_mapped_file_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None,
                                reason="madvise through glibc and /proc/self/smaps: Linux")

SIZE = 8 << 20  # 8 MiB


def _resident_kb(path: Path) -> int:
    """Resident kB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, current = 0, False
    target = str(path.resolve())
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            current = len(head) >= 6 and head[5] == target
        elif current and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def _blob(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(bytes(range(256)) * (SIZE // 256))
    return path


def test_read_only_mapping_loses_its_resident_pages_not_its_data(tmp_path: Path) -> None:
    cache = tmp_path / "openvino-cache"
    cache.mkdir()
    path = _blob(cache, "model.blob")
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
        checksum = sum(view[::4096])  # touch every page
        assert _resident_kb(path) >= SIZE // 1024 * 3 // 4
        dropped = drop_mapped_file_pages(cache)
        assert dropped >= SIZE
        assert _resident_kb(path) < SIZE // 1024 // 4
        assert sum(view[::4096]) == checksum  # faults back in from the file
        assert view[:256] == bytes(range(256))


def test_writable_mappings_and_other_folders_are_left_alone(tmp_path: Path) -> None:
    cache, other = tmp_path / "cache", tmp_path / "other"
    cache.mkdir()
    other.mkdir()
    written = _blob(cache, "scratch.bin")
    elsewhere = _blob(other, "model.blob")
    with written.open("r+b") as w, elsewhere.open("rb") as r, \
            mmap.mmap(w.fileno(), 0) as writable, \
            mmap.mmap(r.fileno(), 0, access=mmap.ACCESS_READ) as outside:
        writable[0] = 7
        _ = sum(writable[::4096]), sum(outside[::4096])
        assert drop_mapped_file_pages(cache) == 0  # the only mapping under it is writable
        assert writable[0] == 7
        assert _resident_kb(written) >= SIZE // 1024 * 3 // 4
        assert _resident_kb(elsewhere) >= SIZE // 1024 * 3 // 4


def test_missing_folder_is_a_no_op(tmp_path: Path) -> None:
    assert drop_mapped_file_pages(tmp_path / "absent") == 0
