"""The Redis index: the only code that reads or writes eccache's Redis schema."""

from eccache.index.index import Index, IndexEntry

__all__ = ["Index", "IndexEntry"]
