"""This process's resident memory and uptime (DescribeCluster reports them for every role)."""

from __future__ import annotations

import os
import resource
import time

STARTED = time.monotonic()  # (this module is imported as a role starts)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size now (Linux: /proc/self/statm); elsewhere the peak, from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if os.uname().sysname == "Darwin" else 1024)


def uptime_s() -> float:
    """Seconds since the process started (Linux: from /proc; elsewhere since this module loaded)."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            since_boot = float(f.read().split()[0])
        return max(0.0, since_boot - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, IndexError, ValueError):
        return time.monotonic() - STARTED
