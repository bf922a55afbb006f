from __future__ import annotations

import pytest

from eccache import validation as v
from eccache.errors import InvalidArgument
from eccache.keys import EntryKey, escape


def _slot_tag(key: str) -> str:
    """The part Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.index("{")
    return key[start + 1:key.index("}", start + 1)]


def test_entry_keys_share_one_hash_tag() -> None:
    k = EntryKey("qwen2-vl:bf16", "abc123")
    assert _slot_tag(k.entry) == _slot_tag(k.leases) == "qwen2-vl:bf16|abc123"


@pytest.mark.parametrize("identifier", ["a}b", "{x}", "a|b", "%7D", "a%b"])
def test_structural_characters_cannot_move_or_merge_keys(identifier: str) -> None:
    k = EntryKey("ns", identifier)
    assert _slot_tag(k.entry) == "ns|" + escape(identifier)
    assert "{" not in escape(identifier) and "}" not in escape(identifier)
    # escaping is injective: ("a|b", "c") and ("a", "b|c") stay apart
    assert EntryKey("a|b", "c").entry != EntryKey("a", "b|c").entry


BAD = [
    (lambda: v.check_namespace(""), "empty"),
    (lambda: v.check_namespace("a" * 257), "longer"),
    (lambda: v.check_namespace("has space"), "letters"),
    (lambda: v.check_identifier(""), "empty"),
    (lambda: v.check_identifier("x" * 513), "longer"),
    (lambda: v.check_identifier("tab\there"), "printable"),
    (lambda: v.check_identifier("é"), "printable"),
    (lambda: v.check_identifiers(["a"] * 1025), "at most"),
    (lambda: v.check_layout([2, 3], "complex64", 48, 1 << 20), "dtype"),
    (lambda: v.check_layout([2, 3], "float32", 20, 1 << 20), "nbytes"),
    (lambda: v.check_layout([0, 3], "float32", 0, 1 << 20), "positive"),
    (lambda: v.check_layout([], "float32", 0, 1 << 20), "dimensions"),
    (lambda: v.check_layout([1 << 20, 4], "float32", 16 << 20, 1 << 20), "exceeds"),
    (lambda: v.check_metadata(b"x" * (64 * 1024 + 1)), "metadata"),
    (lambda: v.check_lease_ms(5, 1000), "lease_ms"),
    (lambda: v.check_lease_ms(10**9, 1000), "lease_ms"),
    (lambda: v.check_ttl_s(-1), "ttl_s"),
    (lambda: v.check_lease_id("not-hex!"), "lease_id"),
]


@pytest.mark.parametrize(("call", "words"), BAD)
def test_bad_input_is_refused_with_a_message(call, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        call()


def test_good_input_passes() -> None:
    assert v.check_layout([1369, 3584], "bfloat16", 1369 * 3584 * 2, 1 << 30) == (1369, 3584)
    assert v.check_lease_ms(0, 1234) == 1234
    assert v.check_identifier("sha256:" + "ab" * 32)
