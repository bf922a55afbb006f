"""Redis schema of eccache: entries, read leases, pool heartbeats and aliases.

Every state change is one Lua script from `lua/` (atomic, single hash slot: Redis Cluster needs no
schema change). Reads of many entries are one read-only script (`lookup.lua`; on a Cluster it would be
sent once per hash slot). Time comes from Redis (`TIME` inside scripts), so
leases do not depend on the clocks of clients or servers. Redis failures surface as `Unavailable`.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from eccache.errors import LeaseExpired, Unavailable
from eccache.keys import EntryKey, alias_key, node_key, pool_alive_key, pool_entries_key
from eccache.types import EntryState, ReserveOutcome

_LUA_DIR = pathlib.Path(__file__).with_name("lua")
_ENTRY_FIELDS = ("state", "pool", "off", "nb", "shape", "dtype", "ck", "meta", "hits", "created", "exp",
                 "atime", "wexp")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """An entry as stored in Redis (state PENDING or READY)."""

    state: EntryState
    pool_id: str
    offset: int
    nbytes: int
    shape: tuple[int, ...]
    dtype: str
    checksum: int
    metadata: bytes
    hits: int
    created_ms: int
    expires_ms: int  # READY: TTL expiry (0 none); PENDING: write-lease expiry
    atime_ms: int


def _pack_key(key: EntryKey) -> bytes:
    return key.namespace.encode() + b"\n" + key.identifier.encode()


def _unpack_key(packed: bytes) -> EntryKey:
    namespace, identifier = packed.decode().split("\n", 1)
    return EntryKey(namespace, identifier)


def _s(value: bytes | None) -> str:
    return value.decode() if value is not None else ""


def _i(value: bytes | None) -> int:
    return int(value) if value else 0


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split(",")) if text else ()


def _entry(row: Sequence[bytes | None]) -> IndexEntry | None:
    state = row[0]
    if state not in (b"P", b"R"):
        return None
    ready = state == b"R"
    return IndexEntry(
        state=EntryState.READY if ready else EntryState.PENDING, pool_id=_s(row[1]), offset=_i(row[2]),
        nbytes=_i(row[3]), shape=_shape(_s(row[4])), dtype=_s(row[5]), checksum=_i(row[6]),
        metadata=row[7] or b"", hits=_i(row[8]), created_ms=_i(row[9]),
        expires_ms=_i(row[10]) if ready else _i(row[12]), atime_ms=_i(row[11]))


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise Unavailable(f"redis unreachable: {exc}") from exc
    except redis.ResponseError as exc:
        if "LOADING" in str(exc) or "MASTERDOWN" in str(exc):
            raise Unavailable(f"redis not ready: {exc}") from exc
        raise


def _guarded(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with _redis_errors():
            return fn(*args, **kwargs)
    return wrapper


class Index:
    """Typed operations on the Redis index. Thread-safe (redis-py pools connections)."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._scripts = {p.stem: client.register_script(p.read_text()) for p in _LUA_DIR.glob("*.lua")}

    @classmethod
    def connect(cls, redis_url: str | None) -> Index:
        """Real Redis for a URL; the in-process embedded store (fakeredis) for None."""
        if redis_url:
            client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=1,
                                          health_check_interval=10, retry_on_timeout=False)
        else:
            import fakeredis

            client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        return cls(client)

    @property
    def redis(self) -> redis.Redis:
        return self._r

    # ---- reads -------------------------------------------------------------------------------
    @_guarded
    def get_many(self, keys: Sequence[EntryKey]) -> list[IndexEntry | None]:
        """Entries of many keys in one round trip: one read-only script (a command per key costs
        redis-py more than Redis itself)."""
        if not keys:
            return []
        rows = self._scripts["lookup"](keys=[key.entry for key in keys], args=_ENTRY_FIELDS)
        return [_entry(row) for row in rows]

    @_guarded
    def pool_infos(self, pool_ids: Sequence[str]) -> list[bytes | None]:
        """The heartbeat payload of each pool incarnation, None when it is dead."""
        pipe = self._r.pipeline(transaction=False)
        for pool_id in pool_ids:
            pipe.get(pool_alive_key(pool_id))
        return list(pipe.execute())

    # ---- state changes -----------------------------------------------------------------------
    @_guarded
    def reserve(self, key: EntryKey, *, lease_id: str, lease_ms: int, pool_id: str, offset: int,
                nbytes: int, shape: Sequence[int], dtype: str, metadata: bytes, ttl_s: int,
                dead_pool: str) -> tuple[ReserveOutcome, int]:
        outcome, expires = self._scripts["reserve"](
            keys=[key.entry, key.leases],
            args=[lease_id, lease_ms, pool_id, offset, nbytes, ",".join(map(str, shape)), dtype, metadata,
                  ttl_s, dead_pool])
        return ReserveOutcome[_s(outcome)], int(expires)

    @_guarded
    def commit(self, key: EntryKey, *, lease_id: str, checksum: int, pool_id: str | None) -> None:
        pipe = self._r.pipeline(transaction=False)
        self._scripts["commit"](keys=[key.entry], args=[lease_id, str(checksum)], client=pipe)
        if pool_id:
            # membership lets a successor purge this pool's entries; another hash slot, so not atomic with
            # the commit, and it need not be: a purge only deletes entries that still point at the pool
            pipe.sadd(pool_entries_key(pool_id), _pack_key(key))
        if pipe.execute()[0] != b"OK":
            raise LeaseExpired(f"write lease {lease_id} of {key.identifier!r} is no longer held")

    @_guarded
    def abort(self, key: EntryKey, *, lease_id: str) -> tuple[str, int] | None:
        """Drops a pending entry; returns (pool id, offset) of the slot it pointed at."""
        res = self._scripts["abort"](keys=[key.entry], args=[lease_id])
        return (_s(res[1]), int(res[2])) if res[0] == 1 else None

    @_guarded
    def acquire_many(self, keys: Sequence[EntryKey], lease_ids: Sequence[str],
                     lease_ms: int) -> list[tuple[int, IndexEntry] | None]:
        """Read leases on READY entries: (lease expiry ms, entry) or None per key."""
        pipe = self._r.pipeline(transaction=False)
        for key, lease_id in zip(keys, lease_ids):
            self._scripts["acquire"](keys=[key.entry, key.leases], args=[lease_id, lease_ms], client=pipe)
        out: list[tuple[int, IndexEntry] | None] = []
        for res in pipe.execute():
            if not res:
                out.append(None)
                continue
            expires, pool, off, nb, shape, dtype, ck, meta, hits, created = res
            out.append((int(expires), IndexEntry(
                state=EntryState.READY, pool_id=_s(pool), offset=_i(off), nbytes=_i(nb),
                shape=_shape(_s(shape)), dtype=_s(dtype), checksum=_i(ck), metadata=meta or b"",
                hits=int(hits), created_ms=_i(created), expires_ms=0, atime_ms=0)))
        return out

    @_guarded
    def release_many(self, leases: Sequence[tuple[EntryKey, str]]) -> int:
        pipe = self._r.pipeline(transaction=False)
        for key, lease_id in leases:
            self._scripts["release"](keys=[key.leases], args=[lease_id], client=pipe)
        return sum(int(n) for n in pipe.execute())

    @_guarded
    def evict(self, key: EntryKey, *, pool_id: str, offset: int | str, mode: str = "lru") -> str:
        outcome = _s(self._scripts["evict"](keys=[key.entry, key.leases], args=[pool_id, offset, mode]))
        if outcome in ("EVICTED", "GONE"):
            self._r.srem(pool_entries_key(pool_id), _pack_key(key))
        return outcome

    @_guarded
    def purge_pool(self, pool_id: str, batch: int = 256) -> int:
        """Deletes every entry still placed in a dead pool; returns how many. Idempotent."""
        members_key = pool_entries_key(pool_id)
        purged = 0
        while True:
            members = self._r.spop(members_key, batch)
            if not members:
                return purged
            pipe = self._r.pipeline(transaction=False)
            for packed in members:
                key = _unpack_key(packed)
                self._scripts["evict"](keys=[key.entry, key.leases], args=[pool_id, "*", "dead"], client=pipe)
            purged += sum(r == b"EVICTED" for r in pipe.execute())

    @_guarded
    def delete_many(self, keys: Sequence[EntryKey], *, if_checksum: int = 0) -> int:
        pipe = self._r.pipeline(transaction=False)
        for key in keys:
            self._scripts["delete"](keys=[key.entry, key.leases], args=[str(if_checksum)], client=pipe)
        return sum(int(n) for n in pipe.execute())

    # ---- pools and aliases --------------------------------------------------------------------
    @_guarded
    def claim_node(self, node_name: str, pool_id: str) -> str | None:
        """Records pool_id as the node's live pool; kills the previous incarnation's heartbeat."""
        old = self._r.getset(node_key(node_name), pool_id)
        old_id = _s(old) or None
        if old_id and old_id != pool_id:
            self._r.delete(pool_alive_key(old_id))
        return old_id

    @_guarded
    def heartbeat(self, node_name: str, pool_id: str, info: bytes, ttl_ms: int) -> None:
        pipe = self._r.pipeline(transaction=False)
        pipe.set(pool_alive_key(pool_id), info, px=ttl_ms)
        pipe.set(node_key(node_name), pool_id)
        pipe.execute()

    @_guarded
    def retire_pool(self, node_name: str, pool_id: str) -> None:
        pipe = self._r.pipeline(transaction=False)
        pipe.delete(pool_alive_key(pool_id))
        pipe.delete(node_key(node_name))
        pipe.execute()

    @_guarded
    def set_alias(self, alias: str, namespace: str) -> None:
        self._r.set(alias_key(alias), namespace)

    @_guarded
    def resolve_alias(self, alias: str) -> str | None:
        return _s(self._r.get(alias_key(alias))) or None

    @_guarded
    def lease_held(self, key: EntryKey, lease_id: str) -> bool:
        """True while the read lease exists and has not expired (Redis time)."""
        score = self._r.zscore(key.leases, lease_id)
        if score is None:
            return False
        seconds, micros = self._r.time()
        return score > seconds * 1000 + micros // 1000
