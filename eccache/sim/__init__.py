"""A local EPD simulation shared by ``eccache demo`` and ``eccache bench e2e``.

- ``images``: synthetic PNG images of a few sizes (pure zlib, no PIL), as ``data:`` URLs.
- ``procs``: child processes with ready-line detection and a clean shutdown (SIGTERM, wait, SIGKILL).
- ``stack``: the deployment: an embedded-default ``eccache serve``, mock (or real vLLM) encoder and PD
  instances, and two proxies on the same instances, one with eccache and one without (every image encodes).
- ``workload``: an image-reuse trace and an asyncio driver that measures TTFT through the proxy (stream=true).
- ``runner``: the comparison itself (without the cache, then with it) and its result dictionary.
"""

from __future__ import annotations
