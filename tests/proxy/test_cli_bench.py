"""The CLI entry points as subprocesses: ``python -m proxy`` serves; ``proxy.bench`` prints its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from proxy.bench import _spawn
from proxy.cli import main


def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "0"]) == 2  # neither --pd nor --prefill/--decode
    assert main(["--port", "0", "--pd", "http://a", "--prefill", "http://b", "--decode", "http://c"]) == 2
    assert main(["--port", "0", "--pd", "http://a", "--tenant-keys", "/nonexistent"]) == 2


def test_python_m_proxy_serves_and_routes() -> None:
    with _spawn(["-m", "proxy.mock_vllm", "--role", "pd", "--port", "0"], "listening on") as pd, \
            _spawn(["-m", "proxy", "--port", "0", "--pd", f"http://{pd}", "--encode", f"http://{pd}",
                    "--pd-convention", "vllm", "--admin-key", "k"], "eccache proxy listening on") as px:
        req = urllib.request.Request(f"http://{px}/v1/chat/completions", method="POST",
                                     data=json.dumps({"model": "tiny", "max_tokens": 3,
                                                      "messages": [{"role": "user", "content": "hi"}]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert len(json.loads(resp.read())["choices"][0]["message"]["content"].split()) == 3
        with urllib.request.urlopen(f"http://{px}/health", timeout=10) as resp:
            assert json.loads(resp.read())["instances"]["pd"][0]["healthy"] is True
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{px}/nope", timeout=10)
        assert err.value.code == 404


@pytest.mark.slow
def test_bench_prints_the_agreed_json_keys() -> None:
    out = subprocess.run([sys.executable, "-m", "proxy.bench", "--json", "--requests", "30", "--seconds", "0.5",
                          "--concurrency", "4"], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout)
    for key in ("added_p50_ms", "added_p99_ms", "proxy_rps", "direct_rps"):
        assert isinstance(result[key], (int, float))
    assert result["proxy_rps"] > 0 and result["direct_rps"] > 0


def test_instance_flags_accept_lists_and_repeats() -> None:
    from proxy.cli import build_parser, config_from_args

    args = build_parser().parse_args(["--encode", "http://e1", "http://e2", "--encode", "http://e3",
                                      "--prefill", "http://p", "--decode", "http://d",
                                      "--pd-convention", "layerwise", "--model-family", "qwen3-vl"])
    cfg = config_from_args(args)
    assert cfg.encode_urls == ("http://e1", "http://e2", "http://e3") and cfg.disaggregated
    assert cfg.convention.value == "layerwise" and cfg.estimator.px_per_token == 32
