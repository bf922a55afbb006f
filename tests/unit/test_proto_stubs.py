from __future__ import annotations

import pathlib

from eccache._proto import gen


def test_generated_stubs_match_the_proto(tmp_path: pathlib.Path) -> None:
    gen.generate(tmp_path)
    for name in ("eccache_pb2.py", "eccache_pb2.pyi", "eccache_pb2_grpc.py"):
        assert (tmp_path / name).read_text() == (gen.HERE / name).read_text(), (
            f"{name} drifted from proto/: run `python -m eccache._proto.gen`")
