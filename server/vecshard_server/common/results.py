"""faiss's convention for missing results, shared by the shards (padding their answers) and the
coordinator's merge: id -1 with the worst representable distance for the metric's direction."""

from __future__ import annotations

import numpy as np

FLT_MAX = np.float32(np.finfo(np.float32).max)


def pad_distance(larger_is_better: bool) -> np.float32:
    """The distance faiss reports for a missing result (-1 id)."""
    return -FLT_MAX if larger_is_better else FLT_MAX
