"""Giving freed heap memory back to the operating system."""

from __future__ import annotations

import ctypes
from typing import Any

TRIM_EVERY_S = 10
_LIBC: Any = None


def release_free_memory() -> None:
    """Give the heap's free pages back to the OS (glibc malloc_trim). Batches of adds and searches
    leave freed temporaries between long-lived allocations (faiss's growing lists); glibc keeps such
    pages, and a loaded shard held 1.4-2x its data in RSS. A no-op off glibc."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)
