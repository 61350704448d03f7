# moestream serve in a container. Rules and reasons:
# - Two stages: the builder has gcc (the install compiles the CPU kernels and the io_uring reader as C
#   extensions; without a compiler they would silently fall back to the much slower PyTorch reference), the
#   runtime image has only the virtual environment the builder filled, so no compiler ships.
# - torch comes from the CPU wheel index: the PyPI build of the pinned torch is a CUDA one (gigabytes of GPU
#   libraries this CPU server never loads). `pip install .` then finds torch satisfied and installs the rest.
# - The model is not in the image: it is mounted at /models (a volume, a Kubernetes PVC), and the settings at
#   /etc/moestream/config.toml (a ConfigMap); `docker run ... moestream:latest --model /models/x.gguf` works too,
#   since flags given after the image win over the file's.
# - A non-root user, and nothing written outside /tmp (HOME and the caches point there), so the container
#   can run with a read-only root filesystem.
# - moestream is PID 1 with no init: it handles SIGTERM (drain: new requests 503, running ones get
#   --shutdown-grace seconds) and SIGHUP (re-read the config file) itself, and starts no child processes that
#   would need reaping.
# - HEALTHCHECK uses Python's urllib: the slim image has no curl. /health is 503 while the model loads, so
#   the start period is long (a big model's resident weights take minutes to read).

FROM python:3.11-slim AS builder
ARG TORCH_VERSION=2.13.0
# gcc alone is enough: the extensions are plain C against Python's headers (in the image) and the kernel's
# io_uring ABI (linux-libc-dev, pulled in with libc6-dev). Not version-pinned (DL3008): the base image's Debian
# release fixes them, and an exact pin breaks the build at its next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/moestream
ENV PATH=/opt/moestream/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY moestream ./moestream
RUN pip install . \
    && python -I -c "from moestream.kernels import cpu; assert cpu.available(), 'native kernels did not build'"

FROM python:3.11-slim
# Same path as in the builder: a virtual environment's scripts name their interpreter by absolute path
COPY --from=builder /opt/moestream /opt/moestream
RUN groupadd --system --gid 10001 moestream \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp moestream \
    && mkdir -p /models /etc/moestream \
    && chown moestream:moestream /models
COPY deploy/base/config.toml /etc/moestream/config.toml
ENV PATH=/opt/moestream/bin:$PATH \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/.cache/huggingface \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
VOLUME ["/models"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", \
         "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
ENTRYPOINT ["moestream", "serve"]
CMD ["--config", "/etc/moestream/config.toml"]
