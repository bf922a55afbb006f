"""Auth, TLS and input validation at the gRPC edge: precise statuses, and the server keeps serving."""

from __future__ import annotations

import subprocess

import grpc
import numpy as np
import pytest

from eccache import Client, Unauthenticated
from eccache._proto import eccache_pb2 as pb
from eccache._proto import eccache_pb2_grpc as pb_grpc
from tests.conftest import require

pytestmark = pytest.mark.integration
INVALID = grpc.StatusCode.INVALID_ARGUMENT
TOKEN = "s3cret-token"


def _reserve(**kw) -> pb.ReserveRequest:
    base = dict(namespace="ns", identifier="id", shape=[2, 3], dtype="float32", nbytes=24)
    return pb.ReserveRequest(**{**base, **kw})


BAD_REQUESTS = [
    ("Lookup", pb.LookupRequest(namespace="", identifiers=["a"]), INVALID, "namespace is empty"),
    ("Lookup", pb.LookupRequest(namespace="n s", identifiers=["a"]), INVALID, "namespace may contain"),
    ("Lookup", pb.LookupRequest(namespace="ns", identifiers=["a" * 600]), INVALID, "identifier is longer"),
    ("Lookup", pb.LookupRequest(namespace="ns", identifiers=["a\nb"]), INVALID, "printable"),
    ("Lookup", pb.LookupRequest(namespace="ns", identifiers=["x"] * 2000), INVALID, "at most 1024"),
    ("Reserve", _reserve(dtype="complex128"), INVALID, "dtype"),
    ("Reserve", _reserve(nbytes=25), INVALID, "nbytes 25"),
    ("Reserve", _reserve(shape=[]), INVALID, "dimensions"),
    ("Reserve", _reserve(shape=[0, 3], nbytes=0), INVALID, "positive"),
    ("Reserve", _reserve(shape=[1 << 30, 2], nbytes=8 << 30), INVALID, "exceeds the pool"),
    ("Reserve", _reserve(metadata=b"m" * 70_000), INVALID, "metadata"),
    ("Reserve", _reserve(lease_ms=1), INVALID, "lease_ms"),
    ("Reserve", _reserve(ttl_s=10**9), INVALID, "ttl_s"),
    ("Commit", pb.CommitRequest(namespace="ns", identifier="id", lease_id=""), INVALID, "lease_id"),
    ("Commit", pb.CommitRequest(namespace="ns", identifier="id", lease_id="abc"),
     grpc.StatusCode.FAILED_PRECONDITION, "no longer held"),
    ("Acquire", pb.AcquireRequest(namespace="ns", identifiers=["a"], lease_ms=10**8), INVALID, "lease_ms"),
    ("Release", pb.ReleaseRequest(leases=[pb.LeaseRef(namespace="ns", identifier="a", lease_id="x y")]),
     INVALID, "lease_id"),
    ("Delete", pb.DeleteRequest(namespace="ns", identifiers=[""]), INVALID, "identifier is empty"),
    ("SetAlias", pb.SetAliasRequest(alias="", namespace="ns"), INVALID, "alias"),
    ("SetAlias", pb.SetAliasRequest(alias="tiny", namespace="bad ns"), INVALID, "namespace"),
    ("ReadInline", pb.ReadRequest(namespace="ns", identifier="nope", lease_id="abc"),
     grpc.StatusCode.NOT_FOUND, "not READY"),
]


def test_bad_inputs_each_get_a_precise_status_and_the_server_keeps_serving(eccache_server: str) -> None:
    stub = pb_grpc.ECCacheStub(grpc.insecure_channel(eccache_server))
    seen = []
    for method, request, code, words in BAD_REQUESTS:
        call = getattr(stub, method)
        with pytest.raises(grpc.RpcError) as info:
            result = call(request, timeout=5)
            if method == "ReadInline":
                list(result)
        assert info.value.code() == code, (method, info.value.details())
        assert words in info.value.details(), (method, info.value.details())
        assert "Traceback" not in info.value.details()
        seen.append(method)
    assert len(seen) == len(BAD_REQUESTS)
    with Client(eccache_server) as client:  # still serving
        assert client.put("ns", "fine", np.ones(6, np.float32)) == "stored"


def test_inline_write_beyond_the_reserved_size_is_refused(eccache_server: str) -> None:
    stub = pb_grpc.ECCacheStub(grpc.insecure_channel(eccache_server))
    r = stub.Reserve(_reserve(identifier="over"))
    chunks = iter([pb.WriteChunk(namespace="ns", identifier="over", lease_id=r.lease_id, data=b"x" * 100)])
    with pytest.raises(grpc.RpcError) as info:
        stub.WriteInline(chunks, timeout=5)
    assert info.value.code() == INVALID and "more than the reserved 24 bytes" in info.value.details()


def test_inline_write_without_the_write_lease_is_refused(eccache_server: str) -> None:
    stub = pb_grpc.ECCacheStub(grpc.insecure_channel(eccache_server))
    stub.Reserve(_reserve(identifier="owned"))
    chunks = iter([pb.WriteChunk(namespace="ns", identifier="owned", lease_id="deadbeef", data=b"x" * 24)])
    with pytest.raises(grpc.RpcError) as info:
        stub.WriteInline(chunks, timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def authed_server(server_factory) -> str:
    return server_factory(transport="inline", extra=("--auth-token", TOKEN)).address


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
def test_wrong_or_missing_token_is_unauthenticated_on_every_method(authed_server: str, token) -> None:
    stub = pb_grpc.ECCacheStub(grpc.insecure_channel(authed_server))
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    requests = {"Lookup": pb.LookupRequest(namespace="ns", identifiers=["a"]), "Reserve": _reserve(),
                "Commit": pb.CommitRequest(), "Abort": pb.AbortRequest(), "Acquire": pb.AcquireRequest(),
                "Release": pb.ReleaseRequest(), "Delete": pb.DeleteRequest(), "Stats": pb.StatsRequest(),
                "SetAlias": pb.SetAliasRequest(), "ResolveAlias": pb.ResolveAliasRequest(),
                "ReadInline": pb.ReadRequest()}
    for method, request in requests.items():
        with pytest.raises(grpc.RpcError) as info:
            result = getattr(stub, method)(request, metadata=metadata, timeout=5)
            if method == "ReadInline":
                list(result)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
    with pytest.raises(grpc.RpcError) as info:
        stub.WriteInline(iter([pb.WriteChunk()]), metadata=metadata, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_right_token_works_and_client_maps_unauthenticated(authed_server: str) -> None:
    with Client(authed_server, auth_token=TOKEN) as client:
        assert client.put("ns", "a", np.ones(4, np.float32)) == "stored"
        assert client.get("ns", "a").tolist() == [1, 1, 1, 1]
    with Client(authed_server, auth_token="nope") as client:
        with pytest.raises(Unauthenticated):
            client.put("ns", "b", np.ones(4, np.float32))
        assert client.lookup("ns", ["a"]) == [False]  # reads degrade to misses
        assert client.counters["lookup_errors"] == 1


def _make_cert(tmp_path) -> tuple[str, str]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True)
    require(result.returncode == 0, "openssl is needed to make a test certificate")
    return str(cert), str(key)


def test_tls_with_a_generated_certificate(server_factory, tmp_path) -> None:
    cert, key = _make_cert(tmp_path)
    server = server_factory(transport="inline", extra=("--tls-cert", cert, "--tls-key", key,
                                                       "--auth-token", TOKEN))
    with Client(server.address, auth_token=TOKEN, tls_ca=cert) as client:
        assert client.put("ns", "tls", np.arange(8, dtype=np.int32)) == "stored"
        assert client.get("ns", "tls").tolist() == list(range(8))
    with Client(server.address, auth_token=TOKEN, timeout_s=2) as plaintext:  # no TLS: refused
        assert plaintext.lookup("ns", ["tls"]) == [False]
        assert plaintext.counters["lookup_errors"] == 1


def test_server_listens_on_loopback_by_default() -> None:
    from eccache.cli import main  # noqa: F401 - the parser holds the default
    from eccache.server.config import ServerConfig

    assert ServerConfig().host == "127.0.0.1"
