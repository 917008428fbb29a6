# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""Gets the GPU session of issue 19 ready to travel: run here, before the one device call.

The device machine's image holds PyTorch, NumPy, SciPy, scikit-learn, Pillow, h5py, matplotlib and einops, but not
MONAI, pydicom, pytorch-ignite, nibabel, fire or jsonschema, and it cannot reach a package index. It also cannot
see ``../shared/data``: only the checkout travels, with the ignored paths named in ``carry``, 64 MiB in all.
This script puts under ``--dest`` (``.devcarry/``, which ``.gitignore`` ignores):

- ``wheels/``: the wheels of the missing distributions, at the versions installed here (the ones the tests ran
  with), for the device's Python (``--python-version``, 3.12) on manylinux x86-64, downloaded with
  ``pip download --no-deps --only-binary=:all:``. python-gdcm (13 MB) is left out: it decodes JPEG lossless and
  JPEG-LS, which the session's data does not hold;
- ``data.tar.gz`` (one archive, unpacked there into ``/tmp``): ``data/dicom_cxr`` (whole) and ``data/kermany_cxr_224``,
  every class folder thinned by the same stride if needed so that the checkout, the wheels and the archive stay under
  ``--limit-mib``;
- ``carry.json``: what is there, its sizes, and the device call to make.

Then it prints the call: ``run(command="bash benchmarks/gpu_device.sh", carry=[".devcarry"], timeout_s=560)``.

Usage::

    python benchmarks/gpu_prepare.py                                      # for the H100/H200 machine (Python 3.12)
    python benchmarks/gpu_prepare.py --python-version 3.11 --dest /tmp/c  # for a local rehearsal in a bare venv
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from medfuse.utils.paths import shared_data_dir  # noqa: E402

# what the GPU image lacks, with what those need in turn (Requires-Dist, checked below)
DEVICE_WHEELS = ("monai", "pydicom", "pytorch-ignite", "nibabel", "fire", "termcolor", "jsonschema",
                 "jsonschema-specifications", "referencing", "rpds-py", "pylibjpeg", "pylibjpeg-openjpeg")
# already in the GPU image (the device tool's package list); a requirement outside both lists is reported
DEVICE_HAS = ("torch", "numpy", "scipy", "scikit-learn", "pillow", "pyyaml", "tqdm", "einops", "h5py", "matplotlib",
              "packaging", "typing-extensions", "attrs", "filelock", "importlib-resources")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DATA = ("dicom_cxr", "kermany_cxr_224")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def tree_bytes(repo: Path) -> int:
    """Bytes of what the device tool sends without ``carry``: tracked files and untracked files git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((repo / os.fsdecode(n)).stat().st_size for n in names if n and (repo / os.fsdecode(n)).is_file())


def ignore_in_git(repo: Path, dest: Path) -> None:
    """Adds ``dest`` to the repository's ``info/exclude`` (shared by its worktrees) unless git ignores it already."""
    rel = dest.resolve().relative_to(repo.resolve()).as_posix()
    if subprocess.run(["git", "check-ignore", "-q", rel], cwd=repo).returncode == 0:
        return
    exclude = Path(subprocess.run(["git", "rev-parse", "--git-path", "info/exclude"], cwd=repo, capture_output=True,
                                  text=True, check=True).stdout.strip())
    exclude = exclude if exclude.is_absolute() else repo / exclude
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as f:
        f.write(f"/{rel}/\n")


def download_wheels(dest: Path, python_version: str) -> list[Path]:
    pins = []
    for name in DEVICE_WHEELS:
        try:
            pins.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            raise SystemExit(f"gpu_prepare.py: {name} is not installed here; run `make install` first, then this script")
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest),
           *pins]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"gpu_prepare.py: pip download failed ({r.stderr.strip().splitlines()[-1:]}); "
                         f"the package index must be reachable from here")
    wanted = {_norm(p.split("==")[0]): p.split("==")[1] for p in pins}
    wheels = []
    for w in sorted(dest.glob("*.whl")):
        name, version = w.name.split("-")[:2]
        if wanted.get(_norm(name)) != version:  # an older download of another version: two would stop the install
            w.unlink()
        else:
            wheels.append(w)
    missing = set(wanted) - {_norm(w.name.split("-")[0]) for w in wheels}
    if missing:
        raise SystemExit(f"gpu_prepare.py: no wheel was downloaded for {sorted(missing)} into {dest}")
    return wheels


def unmet_requirements(wheels: list[Path], python_version: str) -> list[str]:
    """Requirements of the wheels (for ``python_version``, extras ignored) that neither the wheels nor the GPU
    image provide."""
    import zipfile

    from packaging.requirements import Requirement

    have = {_norm(w.name.split("-")[0]) for w in wheels} | {_norm(n) for n in DEVICE_HAS}
    env = {"python_version": python_version, "python_full_version": python_version + ".0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    unmet = []
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(meta).decode("utf-8", "replace").splitlines()
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if _norm(req.name) not in have:
                unmet.append(f"{w.name.split('-')[0]} needs {req}")
    return unmet


def thinned(files: list[Path], keep: float) -> list[Path]:
    """Every k-th file of each class folder (sorted), keeping about ``keep`` of them; the class balance stays."""
    if keep >= 1.0:
        return files
    by_class: dict[Path, list[Path]] = {}
    for f in files:
        by_class.setdefault(f.parent, []).append(f)
    out = []
    for group in by_class.values():
        n = max(1, round(len(group) * keep))
        step = len(group) / n
        out += [group[int(i * step)] for i in range(n)]
    return sorted(out)


def copy_data(src: Path, dest: Path, room: int) -> dict:
    """``dicom_cxr`` whole, then as much of ``kermany_cxr_224`` as ``room`` bytes allow, thinned evenly."""
    report: dict = {}
    if dest.exists():
        shutil.rmtree(dest)
    dicom = [f for f in sorted((src / "dicom_cxr").glob("*")) if f.is_file()]
    for f in dicom:
        (dest / "dicom_cxr").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest / "dicom_cxr" / f.name)
    used = sum(f.stat().st_size for f in dicom)
    report["dicom_cxr"] = {"files": len(dicom), "bytes": used}
    images = sorted(f for f in (src / "kermany_cxr_224").rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    total = sum(f.stat().st_size for f in images)
    keep = min(1.0, max(0.0, (room - used) / total)) if total else 0.0
    chosen = thinned(images, keep)
    for f in chosen:
        target = dest / "kermany_cxr_224" / f.relative_to(src / "kermany_cxr_224")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    report["kermany_cxr_224"] = {"files": len(chosen), "of": len(images), "kept_fraction": round(keep, 3),
                                 "bytes": sum(f.stat().st_size for f in chosen),
                                 "per_class": {d.name: len([f for f in chosen if f.parent == d])
                                               for d in sorted({f.parent for f in chosen})}}
    return report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="", help="the shared data folder (default: ../shared/data or $MEDFUSE_SHARED_DATA)")
    p.add_argument("--dest", default=str(REPO / ".devcarry"))
    p.add_argument("--python-version", default="3.12", help="the device's Python (3.12 on the H100/H200 image)")
    p.add_argument("--limit-mib", type=float, default=60.0, help="what may travel in all (the tool's limit is 64 MiB)")
    args = p.parse_args(argv)
    data = Path(args.data) if args.data else shared_data_dir()
    missing = [d for d in DATA if data is None or not (data / d).is_dir()]
    if missing:
        raise SystemExit(f"gpu_prepare.py: {', '.join(missing)} not found under {data}; pass --data (the shared data folder)")
    dest = Path(args.dest).resolve()
    inside = dest.is_relative_to(REPO.resolve())
    if inside:
        ignore_in_git(REPO, dest)
    wheels = download_wheels(dest / "wheels", args.python_version)
    unmet = unmet_requirements(wheels, args.python_version)
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    tree = tree_bytes(REPO)
    limit = int(args.limit_mib * 2**20)
    room = limit - tree - wheel_bytes
    for old in dest.iterdir():  # what an earlier run left (all of it would travel): only the wheels are kept
        if old.name != "wheels":
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    staged = copy_data(data, dest / "data", room)
    # one archive, not thousands of small files: what travels is its size, not the small files' disk blocks. GNU
    # headers (PAX added 5 MB of extended headers for the 5216 JPEGs) and gzip level 1 (the headers' padding)
    with tarfile.open(dest / "data.tar.gz", "w:gz", format=tarfile.GNU_FORMAT, compresslevel=1) as tar:
        tar.add(dest / "data", arcname="data")
    shutil.rmtree(dest / "data")
    report = {"python_version": args.python_version, "tree_bytes": tree, "limit_bytes": limit,
              "wheels": {w.name: w.stat().st_size for w in wheels}, "unmet_requirements": unmet,
              "data": staged, "data_tar_bytes": (dest / "data.tar.gz").stat().st_size,
              "device_call": {"command": "bash benchmarks/gpu_device.sh",
                              "carry": [dest.relative_to(REPO.resolve()).as_posix() if inside else str(dest)],
                              "timeout_s": 560}}
    report["total_bytes"] = tree + wheel_bytes + report["data_tar_bytes"]
    (dest / "carry.json").write_text(json.dumps(report, indent=2) + "\n")
    k = report["data"]["kermany_cxr_224"]
    print(f"wheels: {len(wheels)} ({wheel_bytes / 2**20:.1f} MiB); checkout {tree / 2**20:.1f} MiB; "
          f"kermany_cxr_224 {k['files']} of {k['of']} images; in all {report['total_bytes'] / 2**20:.1f} MiB "
          f"(limit {args.limit_mib:g})")
    for u in unmet:
        print(f"not provided by the wheels or the GPU image: {u}")
    if report["total_bytes"] > limit:
        raise SystemExit(f"gpu_prepare.py: {report['total_bytes'] / 2**20:.1f} MiB would travel, over --limit-mib "
                         f"{args.limit_mib:g}; remove untracked files from the checkout or lower what is carried")
    print("device call:", json.dumps(report["device_call"]))
    return report


if __name__ == "__main__":
    main()
