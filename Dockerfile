# medfuse on a CUDA machine: `docker build -t medfuse .` then `docker run --rm --gpus all medfuse`
# runs `make test` (or pass `make demo`). torch comes from the PyTorch CUDA 12.8 index
# (`make install TORCH=cu128`); its wheels bring the CUDA libraries, so the base image only
# needs NVIDIA's container runtime setup. The host needs a driver for CUDA 12.8.
FROM nvidia/cuda:12.8.1-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv make git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/medfuse
# install first (cached while only code changes), then the rest of the checkout
COPY setup.py setup.cfg pyproject.toml MANIFEST.in constraints.txt README.md Makefile ./
COPY medfuse ./medfuse
COPY bundles ./bundles
RUN make install TORCH=cu128
COPY . .

CMD ["make", "test"]
