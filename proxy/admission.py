"""Admission control (pure): at most ``limit`` client requests (streams included) in flight at once.

``Admission.enter`` returns a ``Ticket`` or raises ``Overloaded`` (HTTP 503); the handler releases the ticket
in a ``finally`` when the response is complete (last byte streamed, error, client disconnect or
cancellation). ``Ticket.release`` is idempotent, so ``active`` returns to zero exactly once per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import Overloaded


@dataclass(eq=False, slots=True)
class Admission:
    """``limit`` 0 means unlimited (still counted)."""

    limit: int = 0
    active: int = 0
    admitted: int = 0
    rejected: int = 0

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError("max_concurrent must be >= 0")

    def enter(self) -> Ticket:
        """Admit one request.

        Raises:
            Overloaded: ``limit`` requests are already in flight.
        """
        if self.limit and self.active >= self.limit:
            self.rejected += 1
            raise Overloaded(f"proxy at its limit of {self.limit} concurrent requests; retry later")
        self.active += 1
        self.admitted += 1
        return Ticket(self)


@dataclass(eq=False, slots=True)
class Ticket:
    admission: Admission
    released: bool = False

    def release(self) -> bool:
        """Leave the admitted set; True the first time, False afterwards."""
        if self.released:
            return False
        self.released = True
        self.admission.active -= 1
        return True
