"""Descriptor-based tools for the public API: the API reference (docs/api.md) written from the proto
comments, and the lock of what v1 has published (proto/vecshard/v1/api.lock.json), which later
versions may extend but never change. Used by proto/generate.py and the tests."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PUBLIC = ["vecshard/v1/types.proto", "vecshard/v1/payload.proto", "vecshard/v1/vector_search.proto"]
LOCK = PROTO_ROOT / "vecshard" / "v1" / "api.lock.json"
API_DOC = PROTO_ROOT.parent / "docs" / "api.md"
EXAMPLES = PROTO_ROOT / "api-examples.md"


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The public protos compiled with their comments (source info)."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *PUBLIC,
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed")
        fds = descriptor_pb2.FileDescriptorSet()
        fds.ParseFromString(out.read_bytes())
    return fds


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    out = {}
    for loc in file.source_code_info.location:
        text = (loc.leading_comments or loc.trailing_comments).strip()
        if text:
            out[tuple(loc.path)] = " ".join(line.strip() for line in text.splitlines())
    return out


def api_markdown(fds: descriptor_pb2.FileDescriptorSet) -> str:
    """docs/api.md: every service, RPC, message, field and enum value with its proto comment."""
    lines = [
        "# vecshard API reference (`vecshard.v1`)",
        "",
        "Generated from the comments in `proto/vecshard/v1/*.proto` by `python proto/generate.py`; "
        "do not edit (the examples at the end come from `proto/api-examples.md`). Byte layouts and conventions: "
        "the top of `types.proto` and `vector_search.proto`.",
        "",
    ]
    for file in fds.file:
        c = _comments(file)
        for si, service in enumerate(file.service):
            lines += [f"## service `{service.name}`", "", c.get((6, si), ""), ""]
            for mi, m in enumerate(service.method):
                lines += [
                    f"### `{m.name}({m.input_type.rsplit('.', 1)[-1]}) -> {m.output_type.rsplit('.', 1)[-1]}`",
                    "",
                    c.get((6, si, 2, mi), ""),
                    "",
                ]
    for file in fds.file:
        c = _comments(file)
        for ei, enum in enumerate(file.enum_type):
            lines += [
                f"## enum `{enum.name}`",
                "",
                c.get((5, ei), ""),
                "",
                "| value | number | meaning |",
                "|---|---:|---|",
            ]
            lines += [f"| `{v.name}` | {v.number} | {c.get((5, ei, 2, vi), '')} |" for vi, v in enumerate(enum.value)]
            lines.append("")
        for mi, msg in enumerate(file.message_type):
            lines += [
                f"## message `{msg.name}`",
                "",
                c.get((4, mi), ""),
                "",
                "| field | number | type | meaning |",
                "|---|---:|---|---|",
            ]
            for fi, f in enumerate(msg.field):
                scalar = descriptor_pb2.FieldDescriptorProto.Type.Name(f.type).removeprefix("TYPE_").lower()
                ftype = f.type_name.rsplit(".", 1)[-1] if f.type_name else scalar
                if f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
                    ftype = f"repeated {ftype}"
                lines.append(f"| `{f.name}` | {f.number} | {ftype} | {c.get((4, mi, 2, fi), '')} |")
            lines.append("")
    lines += ["", EXAMPLES.read_text()]  # hand-written examples of the data API, run by tests/test_api_examples.py
    return "\n".join(line.rstrip() for line in lines).replace("\n\n\n", "\n\n") + "\n"


def api_lock(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """What the public API has published: field numbers and types, enum numbers, RPC signatures."""
    lock: dict[str, Any] = {"messages": {}, "enums": {}, "services": {}}
    for file in fds.file:
        pkg = file.package
        for msg in file.message_type:
            lock["messages"][f"{pkg}.{msg.name}"] = {
                f.name: [f.number, f.type, f.label, f.type_name] for f in msg.field
            }
        for enum in file.enum_type:
            lock["enums"][f"{pkg}.{enum.name}"] = {v.name: v.number for v in enum.value}
        for service in file.service:
            lock["services"][f"{pkg}.{service.name}"] = {m.name: [m.input_type, m.output_type] for m in service.method}
    return lock


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Everything in `old` that `new` removed or changed (additions are fine)."""
    problems = []
    for kind in ("messages", "enums", "services"):
        for name, members in old[kind].items():
            if name not in new[kind]:
                problems.append(f"{kind[:-1]} {name} was removed")
                continue
            for member, sig in members.items():
                if member not in new[kind][name]:
                    problems.append(f"{name}.{member} was removed")
                elif new[kind][name][member] != sig:
                    problems.append(f"{name}.{member} changed from {sig} to {new[kind][name][member]}")
    return problems


def write(lock: bool) -> list[Path]:
    fds = descriptor_set()
    API_DOC.parent.mkdir(exist_ok=True)
    API_DOC.write_text(api_markdown(fds))
    written = [API_DOC]
    if lock:
        current = json.loads(LOCK.read_text()) if LOCK.exists() else None
        new = api_lock(fds)
        if current and (problems := breaking_changes(current, new)):
            raise SystemExit("refusing to lock breaking changes to vecshard.v1:\n  " + "\n  ".join(problems))
        LOCK.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
        written.append(LOCK)
    return written
