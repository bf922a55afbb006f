"""The client-side transport interface: write a reserved slot, read an acquired one."""

from __future__ import annotations

from abc import ABC, abstractmethod

from eccache.types import Location


class Transport(ABC):
    """Moves bytes between a local buffer and a slot of a server's pool.

    Implementations raise TransportError on failure; they never return partial data silently.
    """

    name: str

    @abstractmethod
    def write(self, namespace: str, identifier: str, lease_id: str, location: Location,
              data: memoryview) -> None:
        """Copies data (exactly location.nbytes) into the reserved slot."""

    @abstractmethod
    def read_into(self, namespace: str, identifier: str, lease_id: str, location: Location,
                  out: memoryview) -> None:
        """Copies the acquired slot's bytes into out (len(out) == location.nbytes)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Releases what the transport holds (engines, registered buffers)."""
