# syntax=docker/dockerfile:1
# eccache image: the cache server (`eccache serve`, default CMD), the EPD proxy (`eccache proxy ...`) and the
# mock vLLM instances of the demo (`python -m proxy.mock_vllm ...`). Built by docker-compose.yml.
#
# Two targets:
#   runtime (default, last stage)  python:3.11-slim + eccache[mooncake]       docker build -t eccache .
#   vllm                           vllm/vllm-openai + eccache (the connector) docker build --target vllm .
# BuildKit (the default builder of Compose v2) builds only the stages a target needs: the default target never
# pulls the vLLM image.
#
# The Mooncake wheel (mooncake-transfer-engine-non-cuda) is published for linux/amd64; on an arm64 laptop build
# with `--platform linux/amd64`, or with `--build-arg EXTRAS=` and serve with `--transport inline`.

ARG VLLM_IMAGE=vllm/vllm-openai:latest

# ---- vLLM with the eccache connector (compose profile "gpu") ------------------------------------------------
FROM ${VLLM_IMAGE} AS vllm
ARG EXTRAS=mooncake
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore MC_LOG_LEVEL=ERROR
RUN apt-get update \
 && apt-get install -y --no-install-recommends libibverbs1 libnuma1 libcurl4 \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /tmp/eccache-src/
COPY eccache /tmp/eccache-src/eccache
COPY connector /tmp/eccache-src/connector
COPY proxy /tmp/eccache-src/proxy
# recent vLLM images install into the system Python with uv; older ones with pip
RUN if command -v uv >/dev/null 2>&1; then uv pip install --system "/tmp/eccache-src${EXTRAS:+[$EXTRAS]}"; \
    else python3 -m pip install "/tmp/eccache-src${EXTRAS:+[$EXTRAS]}"; fi \
 && rm -rf /tmp/eccache-src

# ---- eccache runtime (default) ------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
ARG EXTRAS=mooncake
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    MC_LOG_LEVEL=ERROR
# Mooncake Transfer Engine runtime libraries (libibverbs1 is needed even for TCP)
RUN apt-get update \
 && apt-get install -y --no-install-recommends libibverbs1 libnuma1 libcurl4 \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /tmp/eccache-src/
COPY eccache /tmp/eccache-src/eccache
COPY connector /tmp/eccache-src/connector
COPY proxy /tmp/eccache-src/proxy
RUN pip install "/tmp/eccache-src${EXTRAS:+[$EXTRAS]}" && rm -rf /tmp/eccache-src \
 && groupadd --system --gid 10001 eccache \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin eccache
USER 10001:10001
WORKDIR /tmp
# gRPC. Metrics (--metrics-port) and the Mooncake TE ports (random, unauthenticated) are not published here:
# the TE ports must stay on the trusted internal network.
EXPOSE 50051
CMD ["eccache", "serve", "--host", "0.0.0.0", "--port", "50051", "--pool-size", "1GiB"]
