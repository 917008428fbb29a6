#!/usr/bin/env bash
# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
#
# The GPU session of issue 19, on the device machine: installs the wheels that benchmarks/gpu_prepare.py put in
# .devcarry/wheels (the GPU image has PyTorch but not MONAI, pydicom, ...; it reaches no package index) into a
# folder of its own, unpacks .devcarry/data.tar.gz into /tmp, checks that medfuse imports, and runs
# benchmarks/gpu_session.py on that data into $OUT.
#
#   bash benchmarks/gpu_device.sh                 # there, with carry [".devcarry"], timeout_s 560
#   PYTHON=/tmp/venv/bin/python MEDFUSE_DEVCARRY=/tmp/c OUT=/tmp/gs bash benchmarks/gpu_device.sh --smoke
#                                                 # a rehearsal on a CPU, in a venv that has only what the image has
# Arguments after the script's name go to gpu_session.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CARRY=${MEDFUSE_DEVCARRY:-.devcarry}
SITE=${MEDFUSE_DEVICE_SITE:-/tmp/medfuse_site}
RESULTS=${OUT:-gpu_session_out}
export PYTHONUNBUFFERED=1

DATA=${MEDFUSE_DEVICE_DATA:-/tmp/medfuse_data}
if [ ! -f "$CARRY/data.tar.gz" ]; then
    echo "gpu_device.sh: $CARRY/data.tar.gz is missing; run benchmarks/gpu_prepare.py here and name $CARRY in carry" >&2
    exit 2
fi
rm -rf "$DATA" && mkdir -p "$DATA" && tar -xzf "$CARRY/data.tar.gz" -C "$DATA" || {
    echo "gpu_device.sh: cannot unpack $CARRY/data.tar.gz into $DATA; rerun benchmarks/gpu_prepare.py" >&2; exit 2; }
shopt -s nullglob
wheels=("$CARRY"/wheels/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"; then
        echo "gpu_device.sh: installing $CARRY/wheels failed on $("$PY" -V 2>&1); rerun benchmarks/gpu_prepare.py --python-version for that Python" >&2
        exit 2
    fi
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import monai.bundle, pydicom, ignite, nibabel, fire, jsonschema, medfuse.workflows.engine, medfuse.networks"; then
    echo "gpu_device.sh: medfuse does not import with $("$PY" -V 2>&1) and $CARRY/wheels (above: the missing module); add its wheel in benchmarks/gpu_prepare.py DEVICE_WHEELS" >&2
    exit 2
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec "$PY" benchmarks/gpu_session.py --data "$DATA/data" --out "$RESULTS" --work /tmp/medfuse_gpu_work "$@"
