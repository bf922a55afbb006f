"""`eccache bench transfer`: the JSON contract, the anchors, the ratio column and the chart."""

from __future__ import annotations

import contextlib
import io
import json
import math
from typing import Any

import pytest

from eccache import cli
from eccache.bench import transfer
from eccache.bench.plot import plot_transfer, transfer_series


def _mbps_values(obj: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) whose key ends in MBps, at any depth."""
    found: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key.endswith("MBps"):
                found.append((f"{path}.{key}", value))
            found += _mbps_values(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            found += _mbps_values(value, f"{path}[{i}]")
    return found


def _fake_row(nbytes: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "size_bytes": nbytes,
        "transports": {"mooncake": {"put_MBps": 500.0, "get_MBps": 900.0, "get_new_array_MBps": 700.0}},
        "baselines": {"socket_MBps": 1000.0, "ec_example_shm_put_MBps": 2000.0, "ec_example_shm_get_MBps": 1500.0,
                      "mooncake_store": "unavailable: test"},
    }
    row["ratios_vs_socket"] = transfer.ratios(row)
    return row


def test_ratios_table_and_plot(tmp_path: Any) -> None:
    rows = [_fake_row(65536), _fake_row(9812992)]
    result = {**rows[0], "sizes": rows, "notes": {"socket": "x"}}
    assert result["ratios_vs_socket"]["mooncake"]["get_MBps"] == pytest.approx(0.9)
    assert result["ratios_vs_socket"]["ec_example_shm"] == {"put_MBps": 2.0, "get_MBps": 1.5}
    text = transfer.table(result)
    assert "get/socket" in text and "put/socket" in text
    assert "ec_example_shm" in text and "unavailable: test" in text
    line = next(ln for ln in text.splitlines() if "9812992" in ln and "mooncake " in ln)
    assert line.split()[-2:] == ["0.50", "0.90"]
    sizes, series = transfer_series(result)
    assert sizes == [65536, 9812992] and set(series) == {"raw loopback socket", "eccache mooncake", "ec_example_shm"}
    png = plot_transfer(result, str(tmp_path / "chart.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_store_unavailable_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing or broken Mooncake Store becomes one 'unavailable: <reason>' entry, never a crash."""
    from contextlib import ExitStack

    from eccache.bench import anchors

    monkeypatch.setattr(anchors, "mooncake_store_available", lambda: None)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("master did not start")

    monkeypatch.setattr(anchors, "mooncake_store", broken)
    with ExitStack() as stack:
        store = transfer.open_store(stack, True, 1 << 20)
    assert store == "unavailable: master did not start"
    assert transfer.store_rows(store, 65536, 2) == {"mooncake_store": "unavailable: master did not start"}
    assert transfer.open_store(ExitStack(), False, 1 << 20).startswith("skipped")


def test_all_sizes_presets() -> None:
    assert sorted(transfer.SHAPES) == [65536, 9812992, 33554432, 66846720]
    assert transfer.QWEN25_NBYTES in transfer.SHAPES


@pytest.mark.integration
@pytest.mark.slow
def test_cli_json_64kib(tmp_path: Any) -> None:
    """The real run: eccache server, socket, ECExample on shm and disk, Mooncake Store (when installed)."""
    out = io.StringIO()
    plot = tmp_path / "t.png"
    with contextlib.redirect_stdout(out):
        rc = cli.main(["bench", "transfer", "--json", "--repeat", "2", "--sizes", "64KiB", "--plot", str(plot)])
    assert rc == 0
    result = json.loads(out.getvalue())
    assert result["size_bytes"] == 65536
    assert set(result) >= {"size_bytes", "transports", "baselines", "sizes", "ratios_vs_socket", "notes"}
    assert [row["size_bytes"] for row in result["sizes"]] == [65536]
    assert "inline" in result["transports"]
    for row in result["transports"].values():
        assert set(row) >= {"put_MBps", "get_MBps"}
    base = result["baselines"]
    assert "socket_MBps" in base
    for path in ("ec_example_shm", "ec_example_disk"):
        assert f"{path}_put_MBps" in base and f"{path}_get_MBps" in base, base
    store = ("mooncake_store_put_MBps" in base and "mooncake_store_get_MBps" in base) or \
        str(base.get("mooncake_store", "")).startswith("unavailable: ")
    assert store, base
    values = _mbps_values(result)
    assert len(values) >= 10
    for where, value in values:
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (where, value)
    assert plot.stat().st_size > 1000
