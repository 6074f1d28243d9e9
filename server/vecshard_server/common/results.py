"""faiss's convention for missing results, shared by the shards (padding their answers) and the
coordinator's merge: id -1 with the worst representable distance for the metric's direction; and
where a Scroll page leaves off, the same on both sides."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FLT_MAX = np.float32(np.finfo(np.float32).max)
MAX_ID = (1 << 63) - 1  # the largest id (int64)


def scroll_next(ids: npt.NDArray[np.int64], start_id: int, more: bool) -> tuple[int, bool]:
    """(next_start_id, done) after a Scroll page of `ids`: the id after its last one; a page ending
    at the largest id is the last (its successor would not fit an int64)."""
    if not ids.size:
        return start_id, not more
    last = int(ids[-1])
    return (last + 1, not more) if last < MAX_ID else (last, True)


def pad_distance(larger_is_better: bool) -> np.float32:
    """The distance faiss reports for a missing result (-1 id)."""
    return -FLT_MAX if larger_is_better else FLT_MAX
