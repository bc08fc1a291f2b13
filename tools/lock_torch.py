"""Write the torch locks: requirements-torch-cpu.lock and requirements-torch-cuda.lock.

    bash tools/setup.sh --relock-torch          the torch version pinned now
    bash tools/setup.sh --relock-torch 2.14.0   another torch version
(or the same with `.venv/bin/python tools/lock_torch.py [VERSION]`)

Each lock pins one torch build and the packages it brings that the distribution locks
(requirements-<distro>.lock, which hold none of the torch family) do not already pin at the same
version: for `cpu` torch X+cpu (PyTorch's CPU index, or a find-links directory that holds the
wheel), for `cuda` torch X from PyPI with its nvidia-*, triton and cuda-* wheels. Nothing is
downloaded but metadata: pip resolves with --dry-run, against PyPI itself (the local pip
configuration is ignored), with the distribution locks as constraints so that the dependencies
torch shares with them keep their pinned versions. Resolved on Linux for CPython 3.11, the
platform of the ROS 2 wheels. After a torch upgrade, re-lock the distributions too
(`LLAVA3D_ROS_DISTRO=<distro> bash tools/setup.sh --relock`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/simple"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DISTRO_LOCKS = sorted(ROOT.glob("requirements-*.lock"))
DISTRO_LOCKS = [p for p in DISTRO_LOCKS if not p.name.startswith("requirements-torch-")]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """name (canonical) -> version of every `name==version` line of a lock."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonical(name)] = version.lstrip("=").strip()
    return out


def configured_find_links() -> list[str]:
    """Local find-links directories of the user's pip configuration (and PIP_FIND_LINKS)."""
    values = os.environ.get("PIP_FIND_LINKS", "").split()
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True
    ).stdout
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".find-links"):
            values += value.strip().strip("'\"").split()
    dirs = []
    for value in values:
        path = value.removeprefix("file://")
        if os.path.isdir(path) and path not in dirs:
            dirs.append(path)
    return dirs


def resolve(spec: str, extra: list[str]) -> dict[str, str]:
    """What pip would install for `spec` on an empty environment (name -> version)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install"]
        cmd += ["--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        cmd += ["--index-url", PYPI, *extra, spec]
        for lock in DISTRO_LOCKS:
            cmd += ["-c", str(lock)]
        subprocess.run(cmd, env=env, check=True)
        installs = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in installs}


def write(variant: str, resolved: dict[str, str], title: str) -> None:
    distro = [pins(p) for p in DISTRO_LOCKS]
    keep = {
        name: version
        for name, version in resolved.items()
        if not all(d.get(canonical(name)) == version for d in distro)
    }
    path = ROOT / f"requirements-torch-{variant}.lock"
    header = (
        f"# {title}.\n"
        f"# What tools/setup.sh installs for LLAVA3D_TORCH={variant}, beside requirements-<distro>.lock\n"
        "# (which pins torch's other dependencies). Written by `bash tools/setup.sh --relock-torch\n"
        "# [VERSION]` (tools/lock_torch.py); do not edit by hand.\n"
    )
    # `torch==X` also matches a local build X+cpu (and prefers it), which a find-links directory
    # may hold: the CUDA lock pins the exact string.
    exact = {"torch": "==="} if variant == "cuda" else {}
    body = "".join(f"{n}{exact.get(n, '==')}{keep[n]}\n" for n in sorted(keep, key=str.lower))
    path.write_text(header + body)
    print(f"{path.name}: {len(keep)} pins")


def main() -> None:
    if len(sys.argv) > 1:
        version = sys.argv[1]
    else:
        version = pins(ROOT / "requirements-torch-cuda.lock")["torch"]
    cpu = f"torch=={version}+cpu"
    wheel_dirs = [
        d for d in configured_find_links() if list(Path(d).glob(f"torch-{version}+cpu-cp311-*.whl"))
    ]
    # PyTorch's CPU index only where no configured find-links directory holds the wheel.
    extra = [f"--find-links={wheel_dirs[0]}"] if wheel_dirs else ["--extra-index-url", CPU_INDEX]
    write("cpu", resolve(cpu, extra), f"torch {version}+cpu (the CPU build)")
    write(
        "cuda",
        resolve(f"torch=={version}", []),
        f"torch {version} from PyPI (the CUDA build) and its CUDA wheels",
    )


if __name__ == "__main__":
    main()
