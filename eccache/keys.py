"""Key derivation: names of Redis keys for namespaces, identifiers and pools (pure).

Every key of one entry shares one Redis Cluster hash tag `{ns|id}`, so each state change is a
single-slot script. Characters with meaning inside a key (`{`, `}`, `|`, `%`) are percent-escaped, so
a hostile identifier can neither move an entry to another slot nor collide with another entry.
Only this module builds key strings.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "ecc"
_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D", "|": "%7C"})


def escape(part: str) -> str:
    """Percent-escapes the characters that are structural in key names."""
    return part.translate(_ESCAPES)


@dataclass(frozen=True, slots=True)
class EntryKey:
    """(namespace, identifier): the identity of one entry."""

    namespace: str
    identifier: str

    @property
    def tag(self) -> str:
        return "{" + escape(self.namespace) + "|" + escape(self.identifier) + "}"

    @property
    def entry(self) -> str:
        """Hash with the entry's state, shape, dtype, location, checksum and counters."""
        return f"{PREFIX}:e:{self.tag}"

    @property
    def leases(self) -> str:
        """Sorted set of read leases: member lease id, score expiry (Redis server ms)."""
        return f"{PREFIX}:l:{self.tag}"


def pool_alive_key(pool_id: str) -> str:
    """Heartbeat of one pool incarnation; expires when its server stops beating."""
    return f"{PREFIX}:pool:{{{escape(pool_id)}}}"


def node_key(node_name: str) -> str:
    """The current pool incarnation of a named node (its stable name, e.g. host:port)."""
    return f"{PREFIX}:node:{{{escape(node_name)}}}"


def alias_key(alias: str) -> str:
    """served model name -> namespace."""
    return f"{PREFIX}:alias:{{{escape(alias)}}}"


def pool_entries_key(pool_id: str) -> str:
    """Set of entry keys placed in one pool (for rebuilds after a Redis restart and for stats)."""
    return f"{PREFIX}:pe:{{{escape(pool_id)}}}"
