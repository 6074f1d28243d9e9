"""Data for tests and benchmarks: the TEXMEX vector files of shared/data and synthetic clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# shared/ sits beside the project root (read-only, absent from a user's clone).
SIFT5K_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sift5k"


def read_vecs(path: Path) -> npt.NDArray[Any]:
    """Read a TEXMEX .fvecs/.ivecs file (each row: int32 d, then d float32/int32 values)."""
    a = np.fromfile(path, dtype="<i4")
    rows = a.reshape(-1, int(a[0]) + 1)[:, 1:]
    return rows.view("<f4").copy() if path.suffix == ".fvecs" else rows.copy()


def clustered(n: int, d: int, centers: int = 20, seed: int = 0) -> npt.NDArray[np.float32]:
    """Deterministic clustered float32 data: Gaussian blobs (sd 1) around centres drawn with sd 4.

    Realistic for IVF (lists of uneven size) and, being continuous, free of distance ties.
    """
    rng = np.random.default_rng(seed)
    c = rng.normal(0, 4, size=(centers, d))
    labels = rng.integers(0, centers, size=n)
    return (c[labels] + rng.normal(0, 1, size=(n, d))).astype(np.float32)
