"""The Redis index behaves identically on real Redis 7 and on the embedded store (fakeredis)."""

from __future__ import annotations

import time

import fakeredis
import pytest
import redis

from eccache.errors import LeaseExpired, Unavailable
from eccache.index import Index
from eccache.keys import EntryKey
from eccache.types import EntryState, ReserveOutcome

K = EntryKey("ns", "img-1")


@pytest.fixture(params=["redis", "fakeredis"])
def index(request: pytest.FixtureRequest) -> Index:
    if request.param == "fakeredis":
        return Index(fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    return Index(redis.Redis.from_url(request.getfixturevalue("redis_url")))


def _reserve(index: Index, lease: str = "aa", lease_ms: int = 5000, key: EntryKey = K, offset: int = 0,
             dead_pool: str = "") -> tuple[ReserveOutcome, int]:
    return index.reserve(key, lease_id=lease, lease_ms=lease_ms, pool_id="p1", offset=offset, nbytes=16,
                         shape=(2, 4), dtype="float16", metadata=b"\x00meta", ttl_s=0, dead_pool=dead_pool)


pytestmark = pytest.mark.integration


def test_reserve_commit_makes_entry_ready(index: Index) -> None:
    assert _reserve(index)[0] is ReserveOutcome.RESERVED
    assert index.get_many([K])[0].state is EntryState.PENDING
    index.commit(K, lease_id="aa", checksum=42, pool_id="p1")
    e = index.get_many([K])[0]
    assert (e.state, e.checksum, e.shape, e.dtype, e.metadata, e.offset) == (
        EntryState.READY, 42, (2, 4), "float16", b"\x00meta", 0)


def test_reserve_of_ready_key_says_exists_and_of_pending_key_in_progress(index: Index) -> None:
    _reserve(index)
    assert _reserve(index, lease="bb")[0] is ReserveOutcome.IN_PROGRESS
    index.commit(K, lease_id="aa", checksum=1, pool_id="p1")
    assert _reserve(index, lease="bb")[0] is ReserveOutcome.EXISTS


def test_entry_of_a_dead_pool_is_replaced(index: Index) -> None:
    _reserve(index)
    index.commit(K, lease_id="aa", checksum=1, pool_id="p1")
    assert _reserve(index, lease="bb", offset=4096, dead_pool="p1")[0] is ReserveOutcome.RESERVED
    assert index.get_many([K])[0].offset == 4096


def test_commit_with_wrong_or_expired_lease_is_refused(index: Index) -> None:
    _reserve(index, lease_ms=150)
    with pytest.raises(LeaseExpired):
        index.commit(K, lease_id="zz", checksum=1, pool_id="p1")
    time.sleep(0.3)
    with pytest.raises(LeaseExpired):
        index.commit(K, lease_id="aa", checksum=1, pool_id="p1")
    assert index.get_many([K])[0] is None  # the pending entry left with its lease


def test_abort_drops_only_with_the_right_lease(index: Index) -> None:
    _reserve(index, offset=8192)
    assert index.abort(K, lease_id="zz") is None
    assert index.abort(K, lease_id="aa") == ("p1", 8192)
    assert index.get_many([K])[0] is None


def test_acquire_counts_hits_and_blocks_eviction_until_release(index: Index) -> None:
    _reserve(index)
    index.commit(K, lease_id="aa", checksum=9, pool_id="p1")
    got = index.acquire_many([K, EntryKey("ns", "nope")], ["l1", "l2"], 5000)
    assert got[1] is None and got[0][1].checksum == 9 and got[0][1].hits == 1
    assert index.lease_held(K, "l1")
    assert index.evict(K, pool_id="p1", offset=0) == "LEASED"
    assert index.release_many([(K, "l1")]) == 1
    assert index.evict(K, pool_id="p1", offset=0) == "EVICTED"
    assert index.get_many([K])[0] is None


def test_expired_read_lease_no_longer_blocks_eviction(index: Index) -> None:
    _reserve(index)
    index.commit(K, lease_id="aa", checksum=9, pool_id="p1")
    index.acquire_many([K], ["l1"], 100)
    time.sleep(0.25)
    assert not index.lease_held(K, "l1")
    assert index.evict(K, pool_id="p1", offset=0) == "EVICTED"


def test_evict_of_a_slot_the_entry_no_longer_uses_says_gone(index: Index) -> None:
    _reserve(index)
    index.commit(K, lease_id="aa", checksum=9, pool_id="p1")
    assert index.evict(K, pool_id="p1", offset=4096) == "GONE"
    assert index.evict(K, pool_id="p2", offset=0) == "GONE"
    assert index.get_many([K])[0] is not None


def test_delete_with_checksum_only_drops_that_version(index: Index) -> None:
    _reserve(index)
    index.commit(K, lease_id="aa", checksum=9, pool_id="p1")
    assert index.delete_many([K], if_checksum=8) == 0
    assert index.delete_many([K], if_checksum=9) == 1


def test_ttl_expiry_respects_read_leases(index: Index) -> None:
    index.reserve(K, lease_id="aa", lease_ms=5000, pool_id="p1", offset=0, nbytes=16, shape=(2, 4),
                  dtype="float16", metadata=b"", ttl_s=1, dead_pool="")
    index.commit(K, lease_id="aa", checksum=9, pool_id="p1")
    assert index.evict(K, pool_id="p1", offset=0, mode="ttl") == "FRESH"
    index.acquire_many([K], ["l1"], 5000)
    time.sleep(1.1)
    assert index.acquire_many([K], ["l2"], 5000) == [None]  # expired entries are not handed out
    assert index.evict(K, pool_id="p1", offset=0, mode="ttl") == "LEASED"
    index.release_many([(K, "l1")])
    assert index.evict(K, pool_id="p1", offset=0, mode="ttl") == "EVICTED"


def test_node_claim_retires_the_previous_pool(index: Index) -> None:
    index.heartbeat("node-a", "pool-1", b"info", 5000)
    assert index.pool_infos(["pool-1"]) == [b"info"]
    assert index.claim_node("node-a", "pool-2") == "pool-1"
    assert index.pool_infos(["pool-1"]) == [None]


def test_unreachable_redis_is_unavailable() -> None:
    index = Index.connect("redis://127.0.0.1:1/0")
    with pytest.raises(Unavailable):
        index.get_many([K])


def test_purge_of_a_dead_pool_removes_only_its_entries(index: Index) -> None:
    other = EntryKey("ns", "img-2")
    _reserve(index)
    index.commit(K, lease_id="aa", checksum=1, pool_id="p1")
    index.reserve(other, lease_id="bb", lease_ms=5000, pool_id="p2", offset=0, nbytes=16, shape=(2, 4),
                  dtype="float16", metadata=b"", ttl_s=0, dead_pool="")
    index.commit(other, lease_id="bb", checksum=2, pool_id="p2")
    index.acquire_many([K], ["l1"], 5000)  # a lease on a dead pool's entry protects nothing
    assert index.purge_pool("p1") == 1
    assert index.get_many([K, other])[0] is None and index.get_many([other])[0] is not None
    assert index.purge_pool("p1") == 0
