"""Child processes of the simulation: start, wait for a ready line, drain output, stop cleanly.

Every child runs in its own session (a terminal's Ctrl-C reaches only the parent, which then stops the
children in order) and, on Linux, gets SIGTERM if the parent dies without cleaning up.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when its parent exits (Linux only; best effort)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Child:
    """One subprocess whose stdout+stderr are drained into a bounded log; ``address`` from its ready line."""

    def __init__(self, name: str, args: Sequence[str], marker: str, *, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.name = name
        self.marker = marker
        self.address = ""
        self.log: collections.deque[str] = collections.deque(maxlen=200)
        self._ready = threading.Event()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MC_LOG_LEVEL": "ERROR", **(env or {})}
        self.proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=full_env, cwd=cwd, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        threading.Thread(target=self._drain, name=f"drain-{name}", daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line.rstrip("\n"))
            if not self._ready.is_set() and self.marker in line:
                self.address = line.strip().rsplit(" ", 1)[-1]
                self._ready.set()
        self._ready.set()  # EOF: the process ended (wait_ready reports it)

    def wait_ready(self, deadline: float) -> str:
        """Block until the ready line (returns the address) or raise with the tail of the child's log."""
        self._ready.wait(max(0.0, deadline - time.monotonic()))
        if not self.address:
            code = self.proc.poll()
            state = f"exited with {code}" if code is not None else "not ready in time"
            tail = "\n".join(list(self.log)[-20:])
            raise RuntimeError(f"{self.name} {state}:\n{tail}")
        return self.address

    def terminate(self) -> None:
        """Send SIGTERM to the child's process group (no wait)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def wait_or_kill(self, timeout_s: float) -> int:
        """Wait for the exit after ``terminate``; SIGKILL the group as a last resort."""
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(10)


class ProcessGroup:
    """Children started together and stopped together, last started first."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stopped_cleanly: bool | None = None

    def start(self, name: str, args: Sequence[str], marker: str, *, env: dict[str, str] | None = None,
              cwd: str | None = None) -> Child:
        """Start a child (see ``Child``) and keep it for ``stop``."""
        child = Child(name, args, marker, env=env, cwd=cwd)
        self.children.append(child)
        return child

    def stop(self, timeout_s: float = 10.0) -> bool:
        """SIGTERM every child (front-ends first), wait, kill stragglers; True when none needed SIGKILL."""
        clean = True
        for child in reversed(self.children):
            child.terminate()
        deadline = time.monotonic() + timeout_s
        for child in reversed(self.children):
            if child.proc.poll() is None:
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    clean = False
                    child.wait_or_kill(0)
        self.children.clear()
        self.stopped_cleanly = clean if self.stopped_cleanly is None else (self.stopped_cleanly and clean)
        return clean
