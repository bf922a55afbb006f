"""Pure parts of the connector: config parsing, namespace derivation, result cache, leases, budgets."""

from __future__ import annotations

import threading

import pytest

from connector.config import ConnectorConfig, parse_servers
from connector.namespace import ModelIdentity, derive_namespace, local_model_fingerprint, sanitize
from connector.state import ByteBudget, Counters, LeaseBook, ResultCache
from eccache.validation import check_namespace


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ config

def test_config_reads_every_documented_key() -> None:
    config = ConnectorConfig.from_extra_config(
        {"server": "a:1, b:2", "namespace": "tenant-1", "auth_token": "t", "transport": "mooncake",
         "lease_ms": "5000", "timeout_ms": 300, "save_queue_bytes": 1024, "staging_bytes": 4096},
        env={},
    )
    assert config.servers == ("a:1", "b:2")
    assert (config.namespace, config.auth_token, config.transport) == ("tenant-1", "t", "mooncake")
    assert (config.lease_ms, config.timeout_ms, config.save_queue_bytes, config.staging_bytes) == (
        5000, 300, 1024, 4096)


def test_config_takes_the_token_from_the_environment() -> None:
    config = ConnectorConfig.from_extra_config({"server": ["h:1"]}, env={"ECCACHE_AUTH_TOKEN": "s3"})
    assert config.auth_token == "s3"
    assert config.servers == ("h:1",)


@pytest.mark.parametrize("extra, message", [
    ({}, "needs 'server'"),
    ({"server": "nohost"}, "host:port"),
    ({"server": "h:1", "transport": "rdma"}, "transport"),
    ({"server": "h:1", "lease_ms": 0}, "lease_ms"),
    ({"server": "h:1", "colour": "red"}, "unknown config keys"),
])
def test_config_rejects_bad_values(extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectorConfig.from_extra_config(extra, env={})


def test_parse_servers_drops_blanks() -> None:
    assert parse_servers("a:1,,b:2 ") == ("a:1", "b:2")


# ------------------------------------------------------------------ namespace

def _identity(**kw: object) -> ModelIdentity:
    base = dict(model="Qwen/Qwen2.5-VL-7B-Instruct", revision="main", dtype="bfloat16", width=3584, mm_hash="abc123")
    base.update(kw)
    return ModelIdentity(**base)  # type: ignore[arg-type]


def test_namespace_is_valid_for_the_server_and_stable() -> None:
    ns = derive_namespace(_identity())
    assert check_namespace(ns) == ns
    assert ns == derive_namespace(_identity())
    assert ns == "Qwen/Qwen2.5-VL-7B-Instruct@main/bfloat16/w3584/mmabc123/v1".replace("Qwen/", "Qwen_")


@pytest.mark.parametrize("change", [
    {"model": "Qwen/Qwen2.5-VL-3B-Instruct"}, {"revision": "r2"}, {"dtype": "float16"}, {"width": 2048},
    {"mm_hash": "def456"},
])
def test_any_model_difference_changes_the_namespace(change: dict) -> None:
    assert derive_namespace(_identity(**change)) != derive_namespace(_identity())


def test_prefix_scopes_a_tenant() -> None:
    a, b = derive_namespace(_identity(), "tenant-a"), derive_namespace(_identity(), "tenant-b")
    assert a != b and a.startswith("tenant-a/") and check_namespace(a) == a


def test_long_or_odd_names_stay_valid_and_distinct() -> None:
    long_a = derive_namespace(_identity(model="x" * 400 + "a"), "p" * 300)
    long_b = derive_namespace(_identity(model="x" * 400 + "b"), "p" * 300)
    assert len(long_a) <= 256 and check_namespace(long_a) == long_a and long_a != long_b
    assert check_namespace(derive_namespace(_identity(model="/models/my model (v2)!")))
    assert sanitize("a b|c") == "a_b_c"


def test_local_checkpoint_fingerprint_follows_content(tmp_path) -> None:
    for name, weights in (("one", b"w1"), ("two", b"w1"), ("three", b"w2")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text('{"hidden_size": 8}')
        (tmp_path / name / "model.safetensors").write_bytes(weights)
    one, two, three = (local_model_fingerprint(str(tmp_path / n)) for n in ("one", "two", "three"))
    assert one == two != three
    assert local_model_fingerprint(str(tmp_path / "missing")) is None


# ------------------------------------------------------------------ result cache

def test_result_cache_expires_after_ttl() -> None:
    clock = FakeClock()
    cache: ResultCache[str, int] = ResultCache(10, 1.0, clock)
    cache.put("a", 1)
    assert cache.get("a") == 1
    clock.now = 1.0
    assert cache.get("a") is None
    assert cache.expire() == [1] and len(cache) == 0


def test_result_cache_is_bounded_and_returns_what_it_pushed_out() -> None:
    cache: ResultCache[str, int] = ResultCache(2, 10.0, FakeClock())
    assert cache.put("a", 1) == [] and cache.put("b", 2) == []
    cache.get("a")  # a is now the most recent
    assert cache.put("c", 3) == [2]
    assert cache.put("a", 4) == [1]
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (4, None, 3)
    assert sorted(cache.clear()) == [3, 4]


# ------------------------------------------------------------------ leases

def test_lease_book_releases_each_lease_once() -> None:
    book: LeaseBook[str] = LeaseBook()
    assert book.add("r1", "img", "L1") is None
    assert book.add("r1", "img", "L2") == "L1"  # replaced: the caller releases the old one
    book.add("r2", "img", "L3")
    book.add("r2", "other", "L4")
    assert book.requests_holding(["img"]) == {"r1", "r2"}
    assert book.holds("r2", "other") and not book.holds("r1", "other")
    assert book.take_item("r2", "other") == "L4"
    assert book.take_request("r1") == ["L2"]
    assert book.take_request("r1") == []
    assert book.take_all() == ["L3"] and len(book) == 0


# ------------------------------------------------------------------ budget and counters

def test_byte_budget_refuses_what_does_not_fit_without_waiting() -> None:
    budget = ByteBudget(100)
    assert budget.try_reserve(60)
    assert not budget.try_reserve(41)
    assert budget.try_reserve(40) and budget.used == 100
    budget.release(60)
    assert budget.used == 40
    with pytest.raises(ValueError):
        budget.release(41)


def test_byte_budget_is_thread_safe() -> None:
    budget = ByteBudget(1000)
    taken: list[bool] = []

    def worker() -> None:
        for _ in range(100):
            taken.append(budget.try_reserve(7))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.used == 7 * sum(taken) <= 1000


def test_counters_report_deltas() -> None:
    counters = Counters(["loads", "saves"])
    counters.add("loads", 2)
    assert counters.take_delta() == {"loads": 2}
    assert counters.take_delta() == {}
    counters.merge({"saves": 3, "unknown": 1})
    assert counters.snapshot() == {"loads": 2, "saves": 3}
    assert counters.take_delta() == {"saves": 3}


# ------------------------------------------------------------------ client pool

class _FakeClient:
    def __init__(self, address: str, fail: set[str], **kwargs: object) -> None:
        self.address, self.fail, self.kwargs, self.closed = address, fail, kwargs, False

    def ping(self) -> str:
        if self.address in self.fail:
            raise ConnectionError(self.address)
        return self.address

    def close(self) -> None:
        self.closed = True


def test_client_pool_fails_over_to_the_next_server() -> None:
    from connector.client_pool import ClientPool

    fail = {"a:1"}
    config = ConnectorConfig(servers=("a:1", "b:2"), auth_token="tok", timeout_ms=1500, staging_bytes=4096)

    def factory(address: str, auth_token: str | None = None, transport: str | None = None, *,
                timeout_s: float = 5.0, staging_bytes: int = 0) -> _FakeClient:
        return _FakeClient(address, fail, auth_token=auth_token, timeout_s=timeout_s, staging_bytes=staging_bytes)

    pool = ClientPool(config, factory)
    assert pool.call(lambda c: c.ping()) == "b:2"
    assert pool.client().kwargs == {"auth_token": "tok", "timeout_s": 1.5, "staging_bytes": 4096}
    fail.add("b:2")
    with pytest.raises(ConnectionError):
        pool.call(lambda c: c.ping())
    fail.clear()
    assert pool.call(lambda c: c.ping()) in {"a:1", "b:2"}
    pool.close()


def test_handoff_is_bounded_in_bytes() -> None:
    torch = pytest.importorskip("torch")
    from connector.handoff import Handoff

    handoff = Handoff(capacity_bytes=100)
    assert handoff.put(("ns", "a"), torch.zeros(10, dtype=torch.float32))  # 40 bytes
    assert handoff.put(("ns", "b"), torch.zeros(10, dtype=torch.float32))
    assert handoff.put(("ns", "c"), torch.zeros(10, dtype=torch.float32))  # pushes out "a"
    assert not handoff.put(("ns", "big"), torch.zeros(30, dtype=torch.float32))
    assert handoff.take(("ns", "a")) is None and handoff.take(("ns", "b")) is not None
    assert handoff.nbytes == 40
