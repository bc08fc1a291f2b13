"""The package as users get it: set-up, generated interfaces beside the code, colcon build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llava3d_ros.answer import ResultCode

REPO = Path(__file__).resolve().parents[1]


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("_ROS_WHEELS_BOOTSTRAP_COMPLETE", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    return env


def test_interfaces_import_beside_handwritten_modules(tmp_path: Path) -> None:
    code = (
        "from llava3d_ros.msg import Answer, Click, GroundedObject, Prompt\n"
        "from llava3d_ros.srv import Query\n"
        "from llava3d_ros.action import Ask\n"
        "import llava3d_ros, llava3d_ros.answer, llava3d_ros.ros.dds\n"
        "from rclpy.serialization import deserialize_message, serialize_message\n"
        "r = Query.Response(); r.answer.code = Answer.BUSY; r.answer.text = 'x'\n"
        "back = deserialize_message(serialize_message(r), Query.Response)\n"
        "assert back.answer.code == Answer.BUSY and back.answer.text == 'x'\n"
        "assert Ask.Feedback().stage == '' and Click.POINT == 1\n"
        "print(llava3d_ros.__file__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == REPO / "llava3d_ros" / "__init__.py"


def test_answer_codes_match_the_core_result_codes() -> None:
    from llava3d_ros.msg import Answer

    for code in ResultCode:
        assert getattr(Answer, code.name) == code.value


def test_setup_is_idempotent_and_says_so() -> None:
    out = subprocess.run(
        ["bash", "tools/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert "already set up" in out.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"LLAVA3D_PYTHON": "/bin/false"}, "Python 3.11 is required"),
        ({"LLAVA3D_CMAKE": "/nonexistent/cmake"}, "cmake (>= 3.21) is required"),
    ],
)
def test_setup_explains_a_missing_prerequisite(
    tmp_path: Path, override: dict[str, str], message: str
) -> None:
    env = {**_clean_env(), "LLAVA3D_VENV": str(tmp_path / "venv"), **override}
    out = subprocess.run(
        ["bash", "tools/setup.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "venv").exists()


@pytest.mark.slow
def test_colcon_build_as_on_a_full_ros2_install(tmp_path: Path) -> None:
    """`colcon build` of the package (colcon from PyPI stands in for a full ROS 2 install)."""
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    src = tmp_path / "src" / "llava3d_ros"
    for rel in listed:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    prefix = str(Path(sys.prefix))
    env = {
        **_clean_env(),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "AMENT_PREFIX_PATH": prefix,
        "CMAKE_PREFIX_PATH": prefix,
    }
    build = subprocess.run(
        [
            str(colcon),
            "build",
            "--cmake-args",
            "-DBUILD_TESTING=OFF",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    install = tmp_path / "install" / "llava3d_ros"
    assert (install / "lib" / "llava3d_ros" / "llava3d_node").exists()
    check = subprocess.run(
        [
            "bash",
            "-c",
            f"source {tmp_path}/install/setup.bash && cd / && {sys.executable} -c "
            "'import llava3d_ros, llava3d_ros.answer; from llava3d_ros.srv import Query; "
            "print(llava3d_ros.__file__)'",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().startswith(str(install))


def test_package_assets_hold_no_training_logs() -> None:
    """The tiny model's training logs live in docs/tiny-model-training/, not in the package."""
    assets = REPO / "llava3d_ros" / "assets"
    shipped = [p.relative_to(assets) for p in assets.rglob("*") if p.is_file()]
    logs = [p for p in shipped if "training" in p.parts or p.name.startswith("log.csv")]
    assert not logs, logs
    assert (REPO / "docs" / "tiny-model-training" / "log.csv").is_file()
