"""One settings model for every role: flags > VECSHARD_* environment > TOML config file > defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vecshard import Client, InvalidArgument
from vecshard_server.cluster.local import LocalCluster
from vecshard_server.common.config import Settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "vecshard.toml"
    config.write_text("max_k = 77\ngrace_s = 2.5\nmax_dim = 64\n")
    monkeypatch.setenv("VECSHARD_CONFIG", str(config))
    monkeypatch.setenv("VECSHARD_GRACE_S", "9")
    s = Settings()
    assert (s.max_k, s.grace_s, s.max_dim, s.max_nlist) == (77, 9.0, 64, 65536)  # file, env over file, default
    assert Settings(max_k=5).max_k == 5  # a flag beats both
    monkeypatch.setenv("VECSHARD_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="no such file"):
        Settings()


def test_config_file_reaches_every_process(tmp_path: Path, name: str) -> None:
    config = tmp_path / "vecshard.toml"
    config.write_text("max_k = 7\n")
    with LocalCluster(shards=2, env={"VECSHARD_CONFIG": str(config)}, log_level="ERROR") as cluster:
        with Client(cluster.address) as c:
            c.create_collection(name, 2)
            c.add(name, [1], [[1.0, 2.0]])
            assert c.search(name, [[1.0, 2.0]], k=7).ids[0, 0] == 1
            with pytest.raises(InvalidArgument, match="max_k=7"):
                c.search(name, np.ones((1, 2)), k=8)
