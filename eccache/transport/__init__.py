"""Data planes: how a client moves an entry's bytes into and out of a server's pool."""

from eccache.transport.base import Transport

__all__ = ["Transport"]
