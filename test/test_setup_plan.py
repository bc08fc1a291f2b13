"""`tools/setup.sh --plan`: which torch the set-up picks and why, and the torch locks.

Nothing here installs anything: --plan only prints, into a venv path that must stay absent.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH = "2.13.0"
FAMILY = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: not a pin: {line!r}"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.lstrip("=")
    return pins


def _path_without_nvidia_smi(tmp_path: Path) -> str:
    """PATH with every nvidia-smi hidden: a directory that has one is replaced by a copy made
    of links to everything else in it (on a GPU machine it is /usr/bin)."""
    dirs = []
    for i, d in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        if d and (Path(d) / "nvidia-smi").exists():
            shadow = tmp_path / f"path{i}"
            shadow.mkdir(exist_ok=True)
            for entry in Path(d).iterdir():
                if entry.name != "nvidia-smi" and not (shadow / entry.name).exists():
                    (shadow / entry.name).symlink_to(entry)
            d = str(shadow)
        dirs.append(d)
    return os.pathsep.join(dirs)


GPU1 = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000)"
GPU2 = "GPU 0: NVIDIA A100 (UUID: GPU-0)\nGPU 1: NVIDIA A100 (UUID: GPU-1)"
DRIVER = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
BAD = ["rocm", "CUDA", "gpu"]
# name: (LLAVA3D_TORCH, nvidia-smi's listing and exit status or None for none, extra env)
SCENARIOS: dict[str, tuple[str | None, tuple[str, int] | None, dict[str, str]]] = {
    "gpu": (None, (GPU1, 0), {}),
    "two-gpus": (None, (GPU2, 0), {}),
    "no-devices": (None, ("No devices were found", 6), {}),
    "no-driver": (None, (DRIVER, 9), {}),
    "no-nvidia-smi": (None, None, {}),
    "cpu-despite-gpu": ("cpu", (GPU1, 0), {}),
    "cuda": ("cuda", None, {}),
    "system": ("system", None, {}),
    "kilted": ("cpu", None, {"LLAVA3D_ROS_DISTRO": "kilted"}),
    "wheel-in-find-links": ("cpu", None, {"PIP_FIND_LINKS": "{tmp}/wheels"}),
    "wheel-elsewhere": ("cpu", None, {"PIP_FIND_LINKS": "{tmp}/empty"}),
    **{f"bad-{v}": (v, None, {}) for v in BAD},
}


def _fake_nvidia_smi(bin_dir: Path, listing: str, code: int) -> None:
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{listing}\nEOF\nexit {code}\n")
    smi.chmod(0o755)


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """`tools/setup.sh --plan` of every scenario, run side by side (each takes about a second)."""
    root = tmp_path_factory.mktemp("plan")
    base = {k: v for k, v in os.environ.items() if not k.startswith("LLAVA3D_")}
    base.pop("PYTHONPATH", None)
    base["PATH"] = _path_without_nvidia_smi(root)
    running = {}
    for name, (torch, smi, extra) in SCENARIOS.items():
        tmp = root / name
        tmp.mkdir()
        (tmp / "empty").mkdir()
        (tmp / "wheels").mkdir()
        (tmp / "wheels" / f"torch-{TORCH}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(
            b""
        )
        env = {**base, "LLAVA3D_VENV": str(tmp / "venv")}
        if torch is not None:
            env["LLAVA3D_TORCH"] = torch
        if smi is not None:
            _fake_nvidia_smi(tmp / "bin", *smi)
            env["PATH"] = f"{tmp / 'bin'}{os.pathsep}{env['PATH']}"
        if "PIP_FIND_LINKS" in extra:
            env["PIP_CONFIG_FILE"] = os.devnull  # only the find-links named here
        env.update({k: v.format(tmp=tmp) for k, v in extra.items()})
        running[name] = subprocess.Popen(
            ["bash", "tools/setup.sh", "--plan"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for name, proc in running.items():
        stdout, stderr = proc.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert not (root / name / "venv").exists(), f"--plan created the venv ({name})"
    return results


def _line(out: subprocess.CompletedProcess[str], key: str) -> str:
    assert out.returncode == 0, out.stderr
    for line in out.stdout.splitlines():
        if line.startswith(f"[plan] {key} "):
            return line
    raise AssertionError(f"no '[plan] {key}' line in:\n{out.stdout}\n{out.stderr}")


def test_auto_picks_cuda_when_nvidia_smi_lists_a_gpu(plans) -> None:
    out = plans["gpu"]
    assert "cuda (auto: nvidia-smi lists 1 GPU)" in _line(out, "torch")
    assert f"torch {TORCH} from PyPI" in _line(out, "torch")
    assert "requirements-jazzy.lock + requirements-torch-cuda.lock" in _line(out, "locks")
    assert "nothing installed" in out.stdout
    assert "cuda (auto: nvidia-smi lists 2 GPUs)" in _line(plans["two-gpus"], "torch")


@pytest.mark.parametrize(
    ("scenario", "why"),
    [
        ("no-devices", "auto: nvidia-smi lists no GPU"),
        ("no-driver", "auto: nvidia-smi lists no GPU"),
        ("no-nvidia-smi", "auto: no nvidia-smi on PATH"),
    ],
)
def test_auto_picks_cpu_without_a_gpu(plans, scenario: str, why: str) -> None:
    out = plans[scenario]
    assert f"cpu ({why}): torch {TORCH}+cpu" in _line(out, "torch")
    assert "requirements-jazzy.lock + requirements-torch-cpu.lock" in _line(out, "locks")


def test_an_explicit_choice_overrides_the_gpu(plans) -> None:
    assert "cpu (LLAVA3D_TORCH=cpu)" in _line(plans["cpu-despite-gpu"], "torch")
    assert "cuda (LLAVA3D_TORCH=cuda)" in _line(plans["cuda"], "torch")


def test_system_uses_the_system_site_packages_and_installs_no_torch(plans) -> None:
    out = plans["system"]
    torch_line = _line(out, "torch")
    assert "system (LLAVA3D_TORCH=system)" in torch_line
    assert "no torch install" in torch_line
    assert "--system-site-packages" in torch_line
    assert "--system-site-packages" in _line(out, "venv")
    locks = _line(out, "locks")
    assert "requirements-jazzy.lock" in locks
    assert "requirements-torch-" not in locks


@pytest.mark.parametrize("value", BAD)
def test_a_bad_value_fails_with_one_clear_line(plans, value: str) -> None:
    out = plans[f"bad-{value}"]
    assert out.returncode != 0
    assert out.stderr.strip() == (
        f"llava3d_ros set-up: LLAVA3D_TORCH must be auto, cpu, cuda or system (got '{value}')."
    )
    assert "[plan]" not in out.stdout


def test_cpu_wheel_in_find_links_needs_no_extra_index(plans) -> None:
    out = plans["wheel-in-find-links"]
    assert "/wheel-in-find-links/wheels/torch-" in _line(out, "torch from")
    assert "download.pytorch.org" not in out.stdout


def test_cpu_wheel_elsewhere_comes_from_pytorchs_cpu_index(plans) -> None:
    assert "https://download.pytorch.org/whl/cpu" in _line(plans["wheel-elsewhere"], "torch from")


def test_plan_names_the_distribution_its_venv_and_the_index(plans) -> None:
    out = plans["kilted"]
    assert "ROS 2 kilted" in _line(out, "distribution")
    assert "/kilted/venv (to be created)" in _line(out, "venv")
    assert "requirements-kilted.lock + requirements-torch-cpu.lock" in _line(out, "locks")
    assert _line(out, "index")


def test_torch_locks_pin_both_builds() -> None:
    cpu = _pins(REPO / "requirements-torch-cpu.lock")
    cuda = _pins(REPO / "requirements-torch-cuda.lock")
    assert cpu["torch"] == f"{TORCH}+cpu"
    assert cuda["torch"] == TORCH
    # `torch==X` would also take a local X+cpu wheel (a find-links directory may hold one)
    assert f"torch==={TORCH}" in (REPO / "requirements-torch-cuda.lock").read_text().split()
    # the CUDA 13 build's own wheels
    for name in (
        "nvidia-cublas",
        "nvidia-cudnn-cu13",
        "nvidia-nccl-cu13",
        "triton",
        "cuda-bindings",
    ):
        assert name in cuda, f"requirements-torch-cuda.lock lacks {name}"
    assert not any(n.startswith("nvidia-") for n in cpu)


def test_distribution_locks_hold_no_torch_family() -> None:
    locks = sorted(REPO.glob("requirements-*.lock"))
    locks = [p for p in locks if not p.name.startswith("requirements-torch-")]
    assert {p.name for p in locks} >= {"requirements-jazzy.lock", "requirements-kilted.lock"}
    cuda = _pins(REPO / "requirements-torch-cuda.lock")
    for lock in locks:
        pins = _pins(lock)
        assert not [n for n in pins if FAMILY.match(n)], lock.name
        # what the torch locks pin is not pinned (differently) by a distribution lock
        assert not {n: v for n, v in pins.items() if n in cuda and cuda[n] != v}, lock.name
