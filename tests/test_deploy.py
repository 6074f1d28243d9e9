"""deploy/: every overlay renders and validates offline; the rendered manifests say what they must;
and the containers' commands, args and environment, exactly as written, run a working cluster."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml

from vecshard import TLS, Client
from vecshard.v1 import shard_pb2_grpc
from vecshard.v1 import vector_search_pb2 as pb

from .certs import CA
from .support import free_port

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ["cpu", "gpu", "scale-100m", "grow-3"]
K8S_VERSION = "1.33.0"

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (d, c)
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay: str) -> None:
    import kubernetes_validate

    docs = render(overlay)
    assert len(docs) >= 13
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_manifests_say_what_they_must(overlay: str) -> None:
    docs = render(overlay)
    ports = {"coordinator": 50051, "shard": 50061, "embedder": 50071}
    for workload, c in containers(docs):
        role = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == ports[role], (workload["metadata"]["name"], probe)
        sc, pod_sc = c["securityContext"], workload["spec"]["template"]["spec"]["securityContext"]
        assert pod_sc["runAsNonRoot"] and pod_sc["runAsUser"] != 0
        assert (
            sc["readOnlyRootFilesystem"]
            and not sc["allowPrivilegeEscalation"]
            and sc["capabilities"]["drop"] == ["ALL"]
        )
        assert c["resources"]["requests"] and c["resources"]["limits"]
        assert workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 15 + 5  # > grace + drain
        gpus = c["resources"]["limits"].get("nvidia.com/gpu")
        assert (gpus == 1) if overlay == "gpu" and role in ("shard", "embedder") else gpus is None
    shards = by_kind(docs, "StatefulSet")
    assert len(shards) == 2
    for sts in shards:
        assert sts["spec"]["podManagementPolicy"] == "Parallel"
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
        svc = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"] == sts["spec"]["serviceName"])
        assert svc["spec"]["clusterIP"] == "None"
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "vecshard-coordinator",
    }
    pdb_targets = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in by_kind(docs, "PodDisruptionBudget")
    }
    assert pdb_targets == {"coordinator", "shard"}
    policy = next(p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "vecshard-shards")
    grpc_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 50061)
    assert {f["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for f in grpc_rule["from"]} == {
        "coordinator",
        "shard",
    }
    config = next(c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("vecshard-config-"))
    assert re.fullmatch(r"vecshard-config-[a-z0-9]{10}", config["metadata"]["name"])  # rolled by content hash
    for _, c in containers(docs):
        assert c["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]


def test_scale_100m_follows_the_capacity_plan() -> None:
    """docs/capacity.md, 100M x 768 IVF_PQ96 + refine: 4 groups x 2 replicas. Group N is pod N of each
    replica-set StatefulSet (a, b), so 4 groups = 4 pods in each, and the coordinators list 4 groups."""
    docs = render("scale-100m")
    shards = {s["metadata"]["name"]: s for s in by_kind(docs, "StatefulSet")}
    assert sorted(shards) == ["vecshard-shard-a", "vecshard-shard-b"]  # 2 replicas per group
    for sts in shards.values():
        assert sts["spec"]["replicas"] == 4  # 4 groups
        res = sts["spec"]["template"]["spec"]["containers"][0]["resources"]
        assert res == {"requests": {"cpu": "2", "memory": "9Gi"}, "limits": {"cpu": "4", "memory": "18Gi"}}
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "300Gi"
    (coordinator,) = by_kind(docs, "Deployment")
    args = coordinator["spec"]["template"]["spec"]["containers"][0]["args"]
    groups = [a.removeprefix("--shard=").split(",") for a in args if a.startswith("--shard=")]
    assert groups == [
        [f"vecshard-shard-{rs}-{n}.vecshard-shard-{rs}:50061" for rs in ("a", "b")] for n in range(4)
    ]  # in placement order: the base's groups 0 and 1 first
    pods = {f"{name}-{i}" for name, sts in shards.items() for i in range(sts["spec"]["replicas"])}
    assert {addr.split(".", 1)[0] for g in groups for addr in g} == pods  # every pod serves exactly one group
    # Everything else is the cpu overlay's.
    cpu = {(d["kind"], d["metadata"]["name"]) for d in render("cpu")}
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == cpu


# -- run as written -------------------------------------------------------------------------------


def _pod_env(
    workload: dict[str, Any], container: dict[str, Any], docs: list[dict[str, Any]], pod: str, index: int
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        cm = next(
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == source["configMapRef"]["name"]
        )
        env.update(cm["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "resourceFieldRef" in item["valueFrom"]:  # e.g. limits.cpu: Kubernetes rounds it up to cores
            ref = item["valueFrom"]["resourceFieldRef"]
            value = container["resources"]["limits"][ref["resource"].split(".", 1)[1]]
            env[item["name"]] = str(math.ceil(float(value[:-1]) / 1000 if value.endswith("m") else float(value)))
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = pod if field == "metadata.name" else str(index)  # the pod-index label
    return env


def _expand(arg: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


class Pods:
    """The rendered manifests' pods as local processes: each container's command, args and environment
    as written; the only rewrites are DNS names and ports to loopback, mount paths to temp dirs."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ca = CA(tmp_path)
        self.tls_dir = tmp_path / "tls"
        self.tls_dir.mkdir()
        cert, key = self.ca.issue("vecshard")  # SANs localhost/127.0.0.1 stand in for the in-cluster names
        shutil.copy(cert, self.tls_dir / "tls.crt")
        shutil.copy(key, self.tls_dir / "tls.key")
        shutil.copy(self.ca.path, self.tls_dir / "ca.crt")
        keys_dir, self.models_dir = tmp_path / "api-keys", tmp_path / "models"
        keys_dir.mkdir()
        self.models_dir.mkdir()
        (keys_dir / "keys.toml").write_text('admin = ["admin-key"]\nread = ["read-key"]\n')
        internal_dir = tmp_path / "internal"
        internal_dir.mkdir()
        (internal_dir / "token").write_text("internal-secret\n")
        self.paths = {
            "/etc/vecshard/tls": str(self.tls_dir),
            "/etc/vecshard/api-keys": str(keys_dir),
            "/etc/vecshard/models": str(self.models_dir),
            "/etc/vecshard/internal": str(internal_dir),
        }
        self.dns: dict[str, str] = {"vecshard-coordinator-x:50051": f"127.0.0.1:{free_port()}"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def address(self) -> str:
        return self.dns["vecshard-coordinator-x:50051"]

    def pods(self, docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any], str, int]]:
        """Every pod of the rendering (each shard pod with a loopback port standing in for its DNS name)."""
        out = []
        for sts in by_kind(docs, "StatefulSet"):
            svc = sts["spec"]["serviceName"]
            for i in range(sts["spec"]["replicas"]):
                name = f"{sts['metadata']['name']}-{i}"
                self.dns.setdefault(f"{name}.{svc}:50061", f"127.0.0.1:{free_port()}")
                out.append((sts, sts["spec"]["template"]["spec"]["containers"][0], name, i))
        coordinator = by_kind(docs, "Deployment")[0]
        out.append((coordinator, coordinator["spec"]["template"]["spec"]["containers"][0], "vecshard-coordinator-x", 0))
        return out

    def start(self, docs: list[dict[str, Any]], only: Callable[[str], bool] = lambda name: True) -> None:
        models_cm = next(
            d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("vecshard-models")
        )
        (self.models_dir / "models.toml").write_text(models_cm["data"]["models.toml"])
        bin_dir = str(Path(sys.executable).parent)
        for workload, c, name, index in self.pods(docs):
            if not only(name):
                continue
            env = _pod_env(workload, c, docs, name, index)
            args = [_expand(a, env) for a in c["args"]]
            listen = (
                self.dns[f"{name}.{workload['spec']['serviceName']}:50061"]
                if workload["kind"] == "StatefulSet"
                else self.dns[f"{name}:50051"]
            )
            local: list[str] = []
            for a in args:
                for host, addr in self.dns.items():
                    a = a.replace(host, addr)
                if a.startswith("--port="):
                    a = f"--port={listen.rsplit(':', 1)[1]}"
                elif a.startswith("--host="):
                    a = "--host=127.0.0.1"
                elif a.startswith("--metrics-port="):
                    a = f"--metrics-port={free_port()}"
                elif a.startswith("--data-dir="):
                    a = f"--data-dir={self.tmp_path / name / 'data'}"
                local.append(a)
            for k, v in list(env.items()):
                for mount, real in self.paths.items():
                    env[k] = env[k].replace(mount, real) if isinstance(v, str) else v
            command = [os.path.join(bin_dir, c["command"][0]), *c["command"][1:]]
            full_env = {**os.environ, **env, "PATH": bin_dir + ":" + os.environ["PATH"]}
            log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
            self.procs[name] = subprocess.Popen(command + local, env=full_env, stdout=subprocess.DEVNULL, stderr=log)

    def client(self) -> Client:
        """A client of the coordinator, once it serves (every process still running)."""
        c = Client(self.address, tls=TLS(root_cert=self.ca.path), api_key="admin-key", timeout=20)
        deadline = time.monotonic() + 120
        while True:
            try:
                c.list_collections()
                return c
            except Exception:
                dead = [p.args for p in self.procs.values() if p.poll() is not None]
                assert not dead and time.monotonic() < deadline, dead or "the cluster did not come up"
                time.sleep(0.5)

    def stop(self, name: str | None = None) -> None:
        for n in [name] if name else list(self.procs):
            self.procs[n].send_signal(signal.SIGTERM)
        for n in [name] if name else list(self.procs):
            try:
                self.procs[n].wait(30)
            except subprocess.TimeoutExpired:
                self.procs[n].kill()
            del self.procs[n]


def test_manifests_run_as_written(tmp_path: Path) -> None:
    docs = render("cpu")
    pods = Pods(tmp_path)
    ca, tls_dir, dns = pods.ca, pods.tls_dir, pods.dns
    try:
        pods.start(docs)
        with pods.client() as c:
            data = np.random.default_rng(0).random((400, 16), dtype=np.float32)
            c.create_collection("k8s", 16, index="ivf_flat", nlist=4)
            c.add("k8s", np.arange(400), data)
            D, I = c.search("k8s", data[:5], k=3)
            assert I[:, 0].tolist() == [0, 1, 2, 3, 4]
            info = c.describe("k8s")
            assert info.count == 400 and len(info.shards) == 2 and all(s.count for s in info.shards)
            assert all("," in s.name for s in info.shards)  # each group has 2 replicas
        # The internal plane: a shard port with the public client certificate (same CA) but without the
        # internal token refuses every call; with the token it serves.
        shard_addr = next(v for k, v in dns.items() if k.startswith("vecshard-shard-a-0"))
        creds = grpc.ssl_channel_credentials(
            ca.path.read_bytes(), (tls_dir / "tls.key").read_bytes(), (tls_dir / "tls.crt").read_bytes()
        )
        with grpc.secure_channel(shard_addr, creds) as ch:
            stub = shard_pb2_grpc.ShardStub(ch)
            for md in ([], [("x-api-key", "admin-key")], [("x-vecshard-internal", "wrong")]):
                with pytest.raises(grpc.RpcError) as err:
                    stub.ListCollections(pb.ListCollectionsRequest(), timeout=10, metadata=md)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, md
            listed = stub.ListCollections(
                pb.ListCollectionsRequest(), timeout=10, metadata=[("x-vecshard-internal", "internal-secret")]
            )
            assert [st.config.name for st in listed.collections] == ["k8s"]
    finally:
        pods.stop()


def test_grown_manifests_reshard_online(tmp_path: Path) -> None:
    """Kubernetes, as written: the cpu overlay's cluster holds data; the grow-3 overlay's new shard pods
    start and the coordinator rolls onto its three --shard groups; `reshard` then moves the collection
    onto all three while it serves, and it answers exactly as before."""
    pods = Pods(tmp_path)
    try:
        pods.start(render("cpu"))
        rng = np.random.default_rng(4)
        data = rng.random((3000, 16), dtype=np.float32)
        with pods.client() as c:
            c.create_collection("grow", 16, index="ivf_flat", nlist=8, nprobe=8)
            c.add("grow", np.arange(3000), data, payloads=[{"n": i} for i in range(3000)])
            c.train("grow")
            before = c.search("grow", data[:20], k=10)
        grown = render("grow-3")
        pods.start(grown, only=lambda name: name.endswith("-2") and "coordinator" not in name)
        pods.stop("vecshard-coordinator-x")  # the Deployment rolls onto the new args
        pods.start(grown, only=lambda name: "coordinator" in name)
        with pods.client() as c:
            assert [len(c.describe("grow").shards)] == [2]  # still on its two groups
            done = c.reshard(3)
            assert [p.phase for p in done] == ["DONE"] and done[0].copied == 3000
            assert 0.2 < done[0].moved / 3000 < 0.45  # ~1/3 move to the new group (the rest stay)
            info = c.describe("grow")
            assert len(info.shards) == 3 and all(s.count for s in info.shards) and info.count == 3000
            after = c.search("grow", data[:20], k=10)
            assert np.array_equal(after.ids, before.ids)
            assert [p.payload for p in c.retrieve("grow", [0, 2999])] == [{"n": 0}, {"n": 2999}]
    finally:
        pods.stop()
