"""A consumer vLLM engine's two connector sides in their own process (used by the cross-process test).

Usage: python -m tests.connector.consumer_proc MODEL_DIR SERVER IDENTIFIER OUT_PATH
Builds a real consumer VllmConfig, resolves a metadata-only request for IDENTIFIER, loads it through
the worker side and saves the loaded tensor to OUT_PATH (torch.save), with the counters beside it.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    model_dir, server, identifier, out_path = argv
    from tests.connector.vllm_support import install_shim

    install_shim()
    import torch

    from tests.connector.helpers import (
        make_connectors,
        make_request,
        make_vllm_config,
        resolve,
        schedule_and_load,
    )

    config = make_vllm_config(model_dir, "ec_consumer", {"server": server})
    scheduler, worker = make_connectors(config)
    try:
        request = make_request("remote-1", identifier, with_media=False)
        assert resolve(scheduler, request), "the entry was not resolved"
        loaded = schedule_and_load(scheduler, worker, request)
        scheduler.request_finished(request)
        torch.save(loaded[identifier], out_path)
        counters = {"worker": worker.counters.snapshot(), "scheduler": scheduler.counters.snapshot(),
                    "namespace": scheduler.namespace}
        with open(out_path + ".json", "w") as f:
            json.dump(counters, f)
    finally:
        scheduler.shutdown()
        worker.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
