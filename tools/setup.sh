#!/usr/bin/env bash
# One-command set-up of llava3d_ros for one ROS 2 distribution from its PyPI wheels: a venv of
# that distribution's own, its pinned Python dependencies (requirements-<distro>.lock), Debian
# libraries when possible, the ROS interfaces built with CMake against that venv's wheels (the
# project's own, plus tf2_msgs and vision_msgs where the venv lacks them), and the package
# itself (editable). Idempotent: a second run with unchanged inputs returns in well under a
# second.
#   bash tools/setup.sh                             ROS 2 Jazzy (LTS, the default) in ./.venv
#   LLAVA3D_ROS_DISTRO=kilted bash tools/setup.sh   ROS 2 Kilted in ./.venv-kilted
#   bash tools/setup.sh --relock                    re-resolve requirements-<distro>.in and
#                                                   rewrite requirements-<distro>.lock
# Every distribution has its own venv and its own build folder (build/<distro>/), and the
# generated interface modules (Python + typesupport .so, which differ per distribution) live
# inside the venv, never in the source tree: switching distributions rebuilds nothing, and the
# venvs work side by side on one source tree. LLAVA3D_VENV=/path puts the venv elsewhere.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CMAKE="${LLAVA3D_CMAKE:-cmake}"
cd "$ROOT"

die() { printf 'llava3d_ros set-up: %s\n' "$*" >&2; exit 1; }
say() { printf '[setup] %s\n' "$*"; }

# --- which distribution, which venv, which build folder -----------------------------------
DEFAULT_DISTRO=jazzy   # the LTS; keep in step with the Makefile
DISTRO="${LLAVA3D_ROS_DISTRO:-$DEFAULT_DISTRO}"
case "$DISTRO" in
  jazzy | kilted) ;;
  *) die "LLAVA3D_ROS_DISTRO must be jazzy or kilted (got '$DISTRO')." ;;
esac
if [[ -n "${LLAVA3D_VENV:-}" ]]; then
  VENV="$(realpath -m "$LLAVA3D_VENV")"
  OWN_VENV=0   # a venv the user named: never removed by this script
  BUILD_ROOT="$ROOT/build/$DISTRO-$(printf '%s' "$VENV" | sha256sum | cut -c1-8)"
else
  # The default distribution keeps the README's ./.venv; any other gets ./.venv-<distro>.
  if [[ "$DISTRO" == "$DEFAULT_DISTRO" ]]; then VENV="$ROOT/.venv"; else VENV="$ROOT/.venv-$DISTRO"; fi
  OWN_VENV=1
  BUILD_ROOT="$ROOT/build/$DISTRO"
fi
LOCK="requirements-$DISTRO.lock"
[[ -f "$LOCK" ]] || die "$LOCK is missing."
SITE="$VENV/lib/python3.11/site-packages"
GENERATED="$SITE/llava3d_ros-interfaces"   # see tools/interfaces_finder.py
STAMP="$VENV/.llava3d-setup"

# Inputs whose change requires redoing the set-up.
inputs_hash() {
  { echo "$DISTRO"
    cat "$LOCK" tools/freeze.py tools/interfaces_finder.py CMakeLists.txt package.xml setup.py \
        pyproject.toml tools/setup.sh msg/*.msg srv/*.srv action/*.action \
        tools/interfaces/wheel_include_fix.cmake tools/interfaces/*/package.xml \
        tools/interfaces/*/CMakeLists.txt tools/interfaces/*/msg/*.msg
  } | sha256sum | cut -d' ' -f1
}
# Generated modules that an earlier set-up copied into the source tree; they would shadow the
# venv's own (and belong to one distribution only).
TREE_GENERATED=("$ROOT/llava3d_ros/msg" "$ROOT/llava3d_ros/srv" "$ROOT/llava3d_ros/action")
tree_generated() {
  local p
  for p in "${TREE_GENERATED[@]}"; do [[ -e "$p" || -L "$p" ]] && return 0; done
  compgen -G "$ROOT/llava3d_ros/*.so" >/dev/null
}

if [[ "${1:-}" != "--relock" && -f "$STAMP" && "$(cat "$STAMP")" == "$(inputs_hash)" \
      && -f "$GENERATED/msg/__init__.py" ]] && ! tree_generated; then
  say "already set up (ROS 2 $DISTRO in $VENV)"
  exit 0
fi
say "setting up ROS 2 $DISTRO in $VENV"

# --- prerequisites -----------------------------------------------------------------------
PY="${LLAVA3D_PYTHON:-}"
if [[ -z "$PY" ]]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && \
       "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PY="$(command -v "$cand")"; break
    fi
  done
fi
if [[ -n "$PY" ]] && ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  die "Python 3.11 is required (the ROS 2 $DISTRO wheels on PyPI are cp311 only); $PY is $("$PY" --version 2>&1 || echo 'not runnable')."
fi
[[ -n "$PY" ]] || die "Python 3.11 is required (the ROS 2 $DISTRO wheels on PyPI are cp311 only); found: $(python3 --version 2>&1 || echo none). Install Python 3.11 or set LLAVA3D_PYTHON=/path/to/python3.11."
"$PY" -c 'import venv, ensurepip' 2>/dev/null || die "$PY lacks venv/ensurepip (Debian: apt-get install python3.11-venv)."
command -v "$CMAKE" >/dev/null 2>&1 || die "cmake (>= 3.21) is required to build the ROS interfaces (Debian: apt-get install cmake)."
cmake_ver="$("$CMAKE" --version | head -n1 | grep -oE '[0-9]+\.[0-9]+' | head -n1)"
[[ "$(printf '%s\n3.21\n' "$cmake_ver" | sort -V | head -n1)" == "3.21" ]] || die "cmake >= 3.21 is required, found $cmake_ver."
command -v cc >/dev/null 2>&1 && command -v c++ >/dev/null 2>&1 || die "a C and C++ compiler are required (Debian: apt-get install build-essential)."
command -v make >/dev/null 2>&1 || die "make is required (Debian: apt-get install make)."

# --- Debian libraries (open3d needs libusb) ----------------------------------------------
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing libusb-1.0-0 (needed by open3d)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    say "WARNING: libusb-1.0-0 is missing and cannot be installed here (not root / no apt); open3d will not import."
  fi
fi

# --- virtual environment of this distribution ----------------------------------------------
# The PyPI ROS wheels' bootstrap re-executes Python with LD_LIBRARY_PATH set; a marker
# inherited from another environment would skip it.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE PYTHONPATH PYTHONHOME
# venv_distro: the distribution a venv holds (its marker; for a venv made before the marker
# existed, the ROS 2 wheels' rclpy: 7.x Jazzy, 9.x Kilted), empty when it holds no ROS 2 wheels.
venv_distro() {
  if [[ -f "$VENV/.llava3d-distro" ]]; then cat "$VENV/.llava3d-distro"; return; fi
  [[ -x "$VENV/bin/python" ]] || return 0
  case "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("ros-rclpy"))' 2>/dev/null)" in
    7.*) echo jazzy ;;
    9.*) echo kilted ;;
    ?*) echo "another distribution" ;;
  esac
}
held="$(venv_distro)"
if [[ -n "$held" && "$held" != "$DISTRO" ]]; then
  if [[ "$OWN_VENV" == 1 ]]; then
    say "$VENV holds ROS 2 $held (an earlier set-up); replacing it with $DISTRO"
    rm -rf "$VENV"
  else
    die "$VENV (LLAVA3D_VENV) holds ROS 2 $held, not $DISTRO; name another LLAVA3D_VENV or remove it."
  fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
fi
echo "$DISTRO" > "$VENV/.llava3d-distro"
# git ignores the venv whatever its name (.gitignore names .venv/ only), as Python 3.13's venv does.
[[ -f "$VENV/.gitignore" ]] || printf '# created by tools/setup.sh\n*\n' > "$VENV/.gitignore"

# --- pinned dependencies ---------------------------------------------------------------------
# pipq ARGS...: quiet pip in the venv; its exit status, its output less the local index's noise.
pipq() {
  local out rc=0
  out="$("$VENV/bin/pip" --disable-pip-version-check -q "$@" 2>&1)" || rc=$?
  printf '%s\n' "$out" | grep -v -e 'is ignored: it is neither' -e '^$' >&2 || true
  return "$rc"
}
lock_hash() { cat "$LOCK" | sha256sum | cut -d' ' -f1; }
if [[ "${1:-}" == "--relock" ]]; then
  say "re-resolving requirements-$DISTRO.in"
  pipq install -r "requirements-$DISTRO.in" || die "pip could not install requirements-$DISTRO.in."
  "$VENV/bin/python" tools/freeze.py > "$LOCK"
  say "$LOCK rewritten"
fi
if [[ ! -f "$VENV/.llava3d-deps" || "$(cat "$VENV/.llava3d-deps")" != "$(lock_hash)" ]]; then
  say "installing pinned dependencies ($LOCK)"
  pipq install -r "$LOCK" || die "the Python dependencies did not install (see the pip output above)."
  "$VENV/bin/python" -c 'import rclpy, torch, transformers' || die "the Python dependencies do not import (see above)."
  lock_hash > "$VENV/.llava3d-deps"
fi

# --- ROS interfaces: rosidl via CMake from the wheels -------------------------------------
# cmake_stage SRC BUILD STAGE LOG [CMAKE_ARGS...]: configure, build and install an ament_cmake
# interface package into a fresh staging prefix, against the wheels in the venv.
cmake_stage() {
  local src="$1" build="$2" stage="$3" log="$4"; shift 4
  rm -rf "$stage"; mkdir -p "$(dirname "$log")"
  (
    export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
    "$CMAKE" -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$stage" -DBUILD_TESTING=OFF \
          -DPython3_EXECUTABLE="$VENV/bin/python" "$@" >"$log" 2>&1 \
      && "$CMAKE" --build "$build" -j"$(nproc)" >>"$log" 2>&1 \
      && "$CMAKE" --install "$build" >>"$log" 2>&1
  ) || { tail -n 30 "$log" >&2; return 1; }
}
REL_BUILD="${BUILD_ROOT#"$ROOT"/}"

# Message-only packages that have no wheel (tf2_msgs for /tf, vision_msgs for
# Detection3DArray): generated from tools/interfaces/<pkg> (the public field lists, so the
# type hashes are the real ones) only where the venv cannot import the package; an
# environment that has the real one keeps it. A copy generated here carries a marker with
# the hash of its sources and is rebuilt when they change.
iface_hash() {
  cat tools/interfaces/wheel_include_fix.cmake tools/interfaces/"$1"/package.xml \
      tools/interfaces/"$1"/CMakeLists.txt tools/interfaces/"$1"/msg/*.msg | sha256sum | cut -d' ' -f1
}
for pkg in tf2_msgs vision_msgs; do
  marker="$VENV/share/$pkg/llava3d-generated"
  if [[ -f "$marker" ]]; then
    if [[ "$(cat "$marker")" == "$(iface_hash "$pkg")" ]]; then
      say "$pkg: generated copy is up to date"
      continue
    fi
  elif (cd /tmp && "$VENV/bin/python" -c "import $pkg.msg") >/dev/null 2>&1; then
    say "$pkg: using the installed package"
    continue
  fi
  say "building $pkg from tools/interfaces/$pkg (the venv has no other $pkg)"
  pstage="$BUILD_ROOT/$pkg/stage"
  cmake_stage "$ROOT/tools/interfaces/$pkg" "$BUILD_ROOT/$pkg/cmake" "$pstage" "$BUILD_ROOT/$pkg.log" \
    || die "building $pkg failed (full log: $REL_BUILD/$pkg.log)."
  rm -rf "$VENV/share/$pkg" "$SITE/$pkg"
  cp "$pstage"/lib/*.so "$VENV/lib/"
  cp -r "$pstage/share/$pkg" "$VENV/share/"
  cp -r "$pstage/share/ament_index/resource_index/." "$VENV/share/ament_index/resource_index/"
  cp -r "$pstage/lib/python3.11/site-packages/$pkg" "$SITE/"
  iface_hash "$pkg" > "$marker"
done
(cd /tmp && "$VENV/bin/python" -c 'from tf2_msgs.msg import TFMessage; from vision_msgs.msg import Detection3DArray
for t in (TFMessage, Detection3DArray): type(t).__import_type_support__()') \
  || die "tf2_msgs / vision_msgs do not import with their type support."

say "building the ROS interfaces (msg/srv/action) in $REL_BUILD/"
BUILD="$BUILD_ROOT/cmake"; STAGE="$BUILD_ROOT/stage"
cmake_stage "$ROOT" "$BUILD" "$STAGE" "$BUILD_ROOT/cmake.log" -DLLAVA3D_INSTALL_PYTHON=OFF \
  || die "building the interfaces failed (full log: $REL_BUILD/cmake.log)."
# Typesupport libraries and the ament index go into the venv prefix (the wheels' bootstrap
# puts $VENV/lib on LD_LIBRARY_PATH). The generated Python and its extension modules go into
# the venv too (site-packages/llava3d_ros-interfaces/), where tools/interfaces_finder.py
# serves them as llava3d_ros.msg/.srv/.action: the source tree stays free of them.
cp "$STAGE"/lib/*.so "$VENV/lib/"
rm -rf "$VENV/share/llava3d_ros"
cp -r "$STAGE/share/llava3d_ros" "$VENV/share/"
cp -r "$STAGE/share/ament_index/resource_index/." "$VENV/share/ament_index/resource_index/"
GEN="$STAGE/lib/python3.11/site-packages/llava3d_ros"
rm -rf "$GENERATED.new"; mkdir -p "$GENERATED.new"
cp -r "$GEN/msg" "$GEN/srv" "$GEN/action" "$GEN"/*.so "$GENERATED.new/"
rm -rf "$GENERATED"; mv "$GENERATED.new" "$GENERATED"
cp tools/interfaces_finder.py "$SITE/_llava3d_ros_interfaces.py"
printf 'import _llava3d_ros_interfaces\n' > "$SITE/llava3d_ros_interfaces.pth"
if tree_generated; then
  say "removing the generated modules an earlier set-up put into llava3d_ros/ (they now live in the venv)"
  rm -rf "${TREE_GENERATED[@]}" "$ROOT"/llava3d_ros/*.so
fi

# --- the package itself (editable) ---------------------------------------------------------
editable_hash() { cat setup.py pyproject.toml | sha256sum | cut -d' ' -f1; }
if [[ ! -f "$VENV/.llava3d-editable" || "$(cat "$VENV/.llava3d-editable")" != "$(editable_hash)" ]]; then
  say "installing llava3d_ros (editable)"
  # setup.py refuses to run unless llava3d_ros/msg exists beside the code (a guard for a bare
  # `pip install`): show it this venv's generated msg for the moment of the install.
  ln -s "$GENERATED/msg" "$ROOT/llava3d_ros/msg"
  trap 'rm -f "$ROOT/llava3d_ros/msg"' EXIT
  pipq install --no-deps --no-build-isolation -e "$ROOT" || die "pip install -e failed (see above)."
  rm -f "$ROOT/llava3d_ros/msg"; trap - EXIT
  editable_hash > "$VENV/.llava3d-editable"
fi
(cd /tmp && "$VENV/bin/python" -c 'from llava3d_ros.srv import Query; from llava3d_ros.action import Ask; import llava3d_ros.ros.dds') \
  || die "the installed package does not import."
inputs_hash > "$STAMP"
say "done: ROS 2 $DISTRO, $(du -sh "$VENV" | cut -f1) in $VENV"
