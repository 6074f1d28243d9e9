"""Regenerate the Python gRPC stubs from proto/ into client/vecshard/v1/.

Usage (from the repository root):  python proto/generate.py [--lock]

It also writes docs/api.md from the proto comments. --lock records the public API as published in
proto/vecshard/v1/api.lock.json (refusing changes to what was locked: v1 only grows); a test fails
when the protos break the lock.

The output is committed; tests/test_generated_stubs.py fails when it is stale against proto/.
Keeping the protos under proto/vecshard/v1/ makes protoc emit `from vecshard.v1 import ...`
imports that work inside the installed package without any rewriting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "client"
PACKAGE_DIR = Path("vecshard") / "v1"
INIT_TEXT = '"""Generated gRPC/protobuf code for vecshard.v1 (python proto/generate.py). Do not edit."""\n'


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Generate the stubs under out_root/vecshard/v1 and return the files written."""
    target = out_root / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*_pb2*.py*"):
        old.unlink()
    (target / "__init__.py").write_text(INIT_TEXT)
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted(target.iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="root of the output package tree")
    parser.add_argument("--lock", action="store_true", help="record the public API in api.lock.json")
    ns = parser.parse_args()
    for path in generate(ns.out):
        print(path)
    sys.path.insert(0, str(PROTO_ROOT))
    import docs

    for path in docs.write(lock=ns.lock):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
