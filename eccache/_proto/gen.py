"""Regenerates the stubs in this folder from proto/ (python -m eccache._proto.gen)."""

from __future__ import annotations

import pathlib
import re
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = "eccache/v1/eccache.proto"


def generate(out_dir: pathlib.Path) -> None:
    """Writes eccache_pb2.py, eccache_pb2.pyi and eccache_pb2_grpc.py into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "_gen"
    tmp.mkdir(exist_ok=True)
    rc = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                      f"--grpc_python_out={tmp}", str(PROTO_ROOT / PROTO)])
    if rc != 0:
        raise SystemExit(f"protoc failed with {rc}")
    for src in (tmp / "eccache" / "v1").iterdir():
        text = src.read_text()
        # flat layout: stubs import each other relative to eccache._proto
        text = re.sub(r"^from eccache\.v1 import eccache_pb2", "from eccache._proto import eccache_pb2",
                      text, flags=re.M)
        (out_dir / src.name).write_text(text)
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    tmp.rmdir()


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
