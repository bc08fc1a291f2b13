#!/usr/bin/env bash
# One-command set-up of llava3d_ros in ./.venv: pinned Python dependencies (incl. the ROS 2
# Kilted PyPI wheels), Debian libraries when possible, the ROS interfaces built with CMake
# from those wheels (the project's own, plus tf2_msgs and vision_msgs where the venv lacks
# them), and the package itself (editable). Idempotent: a second run with
# unchanged inputs returns in well under a second.
#   bash tools/setup.sh            set up (or check it is up to date)
#   bash tools/setup.sh --relock   re-resolve requirements.in and rewrite requirements.lock
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LLAVA3D_VENV:-$ROOT/.venv}"
CMAKE="${LLAVA3D_CMAKE:-cmake}"
STAMP="$VENV/.llava3d-setup"
cd "$ROOT"

die() { printf 'llava3d_ros set-up: %s\n' "$*" >&2; exit 1; }
say() { printf '[setup] %s\n' "$*"; }

# Inputs whose change requires redoing the set-up.
inputs_hash() {
  cat requirements.lock tools/freeze.py CMakeLists.txt package.xml setup.py tools/setup.sh msg/*.msg srv/*.srv action/*.action \
      tools/interfaces/wheel_include_fix.cmake tools/interfaces/*/package.xml \
      tools/interfaces/*/CMakeLists.txt tools/interfaces/*/msg/*.msg \
    | sha256sum | cut -d' ' -f1
}

if [[ "${1:-}" != "--relock" && -f "$STAMP" && "$(cat "$STAMP")" == "$(inputs_hash)" \
      && -f "$ROOT/llava3d_ros/msg/__init__.py" ]]; then
  say "already set up ($VENV)"
  exit 0
fi

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
  die "Python 3.11 is required (the ROS 2 Kilted wheels on PyPI are cp311 only); $PY is $("$PY" --version 2>&1 || echo 'not runnable')."
fi
[[ -n "$PY" ]] || die "Python 3.11 is required (the ROS 2 Kilted wheels on PyPI are cp311 only); found: $(python3 --version 2>&1 || echo none). Install Python 3.11 or set LLAVA3D_PYTHON=/path/to/python3.11."
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

# --- virtual environment and pinned dependencies -------------------------------------------
# The PyPI ROS wheels' bootstrap re-executes Python with LD_LIBRARY_PATH set; a marker
# inherited from another environment would skip it.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE PYTHONPATH PYTHONHOME
[[ -x "$VENV/bin/python" ]] || { say "creating $VENV"; "$PY" -m venv "$VENV"; }
if [[ "${1:-}" == "--relock" ]]; then
  "$VENV/bin/pip" install -q -r requirements.in
  "$VENV/bin/python" tools/freeze.py > requirements.lock
  say "requirements.lock rewritten"
fi
say "installing pinned dependencies (requirements.lock)"
"$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.lock 2>&1 | grep -v 'is ignored: it is neither' || true
"$VENV/bin/python" -c 'import rclpy, torch, transformers' || die "the Python dependencies did not install (see the pip output above)."

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
SITE="$VENV/lib/python3.11/site-packages"

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
  pstage="$ROOT/build/$pkg/stage"
  cmake_stage "$ROOT/tools/interfaces/$pkg" "$ROOT/build/$pkg/cmake" "$pstage" "$ROOT/build/$pkg.log" \
    || die "building $pkg failed (full log: build/$pkg.log)."
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

say "building the ROS interfaces (msg/srv/action)"
BUILD="$ROOT/build/cmake"; STAGE="$ROOT/build/stage"
cmake_stage "$ROOT" "$BUILD" "$STAGE" "$ROOT/build/cmake.log" -DLLAVA3D_INSTALL_PYTHON=OFF \
  || die "building the interfaces failed (full log: build/cmake.log)."
# Typesupport libraries and the ament index go into the venv prefix (the wheels' bootstrap
# puts $VENV/lib on LD_LIBRARY_PATH); the generated Python sits next to the hand-written
# package so that `llava3d_ros.msg` and `llava3d_ros.ros` come from one folder.
cp "$STAGE"/lib/*.so "$VENV/lib/"
cp -r "$STAGE/share/llava3d_ros" "$VENV/share/"
cp -r "$STAGE/share/ament_index/resource_index/." "$VENV/share/ament_index/resource_index/"
GEN="$STAGE/lib/python3.11/site-packages/llava3d_ros"
rm -rf "$ROOT/llava3d_ros/msg" "$ROOT/llava3d_ros/srv" "$ROOT/llava3d_ros/action"
cp -r "$GEN/msg" "$GEN/srv" "$GEN/action" "$ROOT/llava3d_ros/"
cp "$GEN"/*.so "$ROOT/llava3d_ros/"

say "installing llava3d_ros (editable)"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT" 2>&1 \
  | grep -v 'is ignored: it is neither' || true
(cd /tmp && "$VENV/bin/python" -c 'from llava3d_ros.srv import Query; from llava3d_ros.action import Ask; import llava3d_ros.ros.dds') \
  || die "the installed package does not import."
inputs_hash > "$STAMP"
say "done: $(du -sh "$VENV" | cut -f1) in $VENV"
