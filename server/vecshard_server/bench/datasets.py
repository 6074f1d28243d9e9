"""Data for tests and benchmarks: sift5k (shipped in this package, see data/sift5k/README.md), the
TEXMEX vector file reader and synthetic clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

# Packaged with vecshard_server (pyproject.toml package-data): present in a clone and in any install.
SIFT5K_DIR = Path(__file__).resolve().parent / "data" / "sift5k"
SIFT5K_FILES = ("base.npy", "query.npy", "groundtruth.npy")


def load_sift5k() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """(base 5000x128 float32, queries 100x128 float32, exact top-100 ground-truth ids 100x100 int64).

    The vectors are stored as uint8 (whole numbers 0..255, so float32 is exact). The ground truth is
    the exact squared-L2 top-100 over base, ties broken by lower id, computed by brute force (not
    published). Raises FileNotFoundError naming the missing files.
    """
    paths = [SIFT5K_DIR / f for f in SIFT5K_FILES]
    missing = [str(f) for f in paths if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"sift5k data not found: {', '.join(missing)} (it ships inside the vecshard_server package: reinstall it)"
        )
    base, queries, gt = (np.load(f, allow_pickle=False) for f in paths)
    return base.astype(np.float32), queries.astype(np.float32), gt.astype(np.int64)


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
