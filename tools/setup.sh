#!/usr/bin/env bash
# One-command set-up of llava3d_ros for one ROS 2 distribution from its PyPI wheels: a venv of
# that distribution's own, its pinned Python dependencies (requirements-<distro>.lock) and one
# torch build (requirements-torch-<variant>.lock), Debian libraries when possible, the ROS
# interfaces built with CMake against that venv's wheels (the project's own, plus tf2_msgs and
# vision_msgs where the venv lacks them), and the package itself (editable). Idempotent: a
# second run with unchanged inputs returns in well under a second.
#   bash tools/setup.sh                             ROS 2 Jazzy (LTS, the default) in ./.venv
#   LLAVA3D_ROS_DISTRO=kilted bash tools/setup.sh   ROS 2 Kilted in ./.venv-kilted
#   bash tools/setup.sh --plan                      print what would be installed, install nothing
#   bash tools/setup.sh --relock                    re-resolve requirements-<distro>.in and
#                                                   rewrite requirements-<distro>.lock
#   bash tools/setup.sh --relock-torch [VERSION]    rewrite requirements-torch-{cpu,cuda}.lock
#                                                   (tools/lock_torch.py; metadata only)
# Which torch, LLAVA3D_TORCH:
#   auto (default)  cuda when `nvidia-smi -L` lists a GPU, cpu otherwise
#   cpu             torch X+cpu (requirements-torch-cpu.lock), from a find-links directory of
#                   pip's configuration that holds the wheel, else from PyTorch's CPU index
#   cuda            torch X from PyPI, the CUDA build, with its nvidia-*/triton/cuda-* wheels
#                   (requirements-torch-cuda.lock)
#   system          no torch install: the venv sees the system site-packages, whose torch must
#                   import (a Jetson's JetPack torch)
# The distribution locks hold none of the torch family; switching LLAVA3D_TORCH re-installs
# torch (and its CUDA wheels) only.
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

MODE=install
case "${1:-}" in
  "") ;;
  --plan) MODE=plan ;;
  --relock) MODE=relock ;;
  --relock-torch) MODE=relock-torch ;;
  *) die "unknown option '$1' (options: --plan, --relock, --relock-torch [VERSION])." ;;
esac
if [[ "$MODE" == relock-torch ]]; then (( $# <= 2 )) || die "--relock-torch takes one VERSION at most."
else (( $# <= 1 )) || die "one option at a time."; fi

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
# --relock-torch: the torch locks (tools/lock_torch.py, with the pip of this venv).
if [[ "$MODE" == relock-torch ]]; then
  [[ -x "$VENV/bin/python" ]] || die "--relock-torch runs the pip of $VENV: set it up first (bash tools/setup.sh)."
  exec "$VENV/bin/python" tools/lock_torch.py "${@:2}"
fi

# --- which torch: LLAVA3D_TORCH=auto|cpu|cuda|system ----------------------------------------
TORCH_CHOICE="${LLAVA3D_TORCH:-auto}"
case "$TORCH_CHOICE" in
  auto)
    if ! command -v nvidia-smi >/dev/null 2>&1; then
      VARIANT=cpu; WHY="auto: no nvidia-smi on PATH"
    else
      gpus="$(timeout 20 nvidia-smi -L 2>/dev/null | grep -cE '^GPU [0-9]+:' || true)"
      if (( ${gpus:-0} > 0 )); then
        VARIANT=cuda; WHY="auto: nvidia-smi lists $gpus GPU$( (( gpus == 1 )) || echo s)"
      else
        VARIANT=cpu; WHY="auto: nvidia-smi lists no GPU"
      fi
    fi ;;
  cpu | cuda | system) VARIANT="$TORCH_CHOICE"; WHY="LLAVA3D_TORCH=$TORCH_CHOICE" ;;
  *) die "LLAVA3D_TORCH must be auto, cpu, cuda or system (got '$TORCH_CHOICE')." ;;
esac
TORCH_LOCK=""   # system: none, the venv uses the system's torch
if [[ "$VARIANT" != system ]]; then
  TORCH_LOCK="requirements-torch-$VARIANT.lock"
  [[ -f "$TORCH_LOCK" ]] || die "$TORCH_LOCK is missing (bash tools/setup.sh --relock-torch writes it)."
fi
TORCH_PIN="$([[ -z "$TORCH_LOCK" ]] || sed -n 's/^torch===*//p' "$TORCH_LOCK")"   # 2.13.0+cpu
[[ -z "$TORCH_LOCK" || -n "$TORCH_PIN" ]] || die "$TORCH_LOCK pins no torch."
torch_state() { { echo "$VARIANT"; [[ -z "$TORCH_LOCK" ]] || cat "$TORCH_LOCK"; } | sha256sum | cut -d' ' -f1; }

# The interface sources: the project's msg/srv/action and what builds them (with the lock, the
# inputs of the ROS interfaces; bump IFACE_RECIPE when the way they are built below changes).
IFACE_RECIPE=1
iface_sources() {
  cat tools/interfaces_finder.py CMakeLists.txt package.xml msg/*.msg srv/*.srv action/*.action \
      tools/interfaces/wheel_include_fix.cmake tools/interfaces/*/package.xml \
      tools/interfaces/*/CMakeLists.txt tools/interfaces/*/msg/*.msg
}
# Inputs whose change requires redoing the set-up.
inputs_hash() {
  { echo "$DISTRO $VARIANT"
    cat "$LOCK" ${TORCH_LOCK:+"$TORCH_LOCK"} tools/freeze.py setup.py pyproject.toml tools/setup.sh
    iface_sources
  } | sha256sum | cut -d' ' -f1
}
# Inputs of the ROS interfaces: the distribution's wheels and the interface sources (not torch).
iface_inputs_hash() {
  { echo "$DISTRO $IFACE_RECIPE"; cat "$LOCK"; iface_sources; } | sha256sum | cut -d' ' -f1
}
lock_hash() { sha256sum < "$LOCK" | cut -d' ' -f1; }
# Generated modules that an earlier set-up copied into the source tree; they would shadow the
# venv's own (and belong to one distribution only).
TREE_GENERATED=("$ROOT/llava3d_ros/msg" "$ROOT/llava3d_ros/srv" "$ROOT/llava3d_ros/action")
tree_generated() {
  local p
  for p in "${TREE_GENERATED[@]}"; do [[ -e "$p" || -L "$p" ]] && return 0; done
  compgen -G "$ROOT/llava3d_ros/*.so" >/dev/null
}

# set_up: nothing to do (the last set-up's inputs unchanged, its generated modules in place).
set_up() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(inputs_hash)" && -f "$GENERATED/msg/__init__.py" ]] \
    && ! tree_generated
}
IFACE_STAMP="$VENV/.llava3d-interfaces"
# interfaces_current: the generated ROS interfaces match their inputs.
interfaces_current() {
  [[ "$(cat "$IFACE_STAMP" 2>/dev/null)" == "$(iface_inputs_hash)" && -f "$GENERATED/msg/__init__.py" ]]
}
if [[ "$MODE" == install ]] && set_up; then
  say "already set up (ROS 2 $DISTRO, torch $VARIANT, in $VENV)"
  exit 0
fi

# --- helpers ---------------------------------------------------------------------------------
# find_python: Python 3.11 (LLAVA3D_PYTHON, else python3.11 or python3 when 3.11) into PY.
find_python() {
  PY="${LLAVA3D_PYTHON:-}"
  [[ -n "$PY" ]] && return 0
  local cand
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && \
       "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PY="$(command -v "$cand")"; return 0
    fi
  done
}
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
# pip_config KEY: the values (one a line) of pip's configuration keys ending in .KEY (global.,
# install., :env: for PIP_*), as `pip config list` shows them (read once); nothing without a pip.
PIP_CONFIG_LIST=""
read_pip_config() {
  if [[ -x "$VENV/bin/pip" ]]; then PIP_CONFIG_LIST="$("$VENV/bin/pip" config list 2>/dev/null)" && return 0; fi
  if [[ -n "${PY:-}" ]]; then PIP_CONFIG_LIST="$("$PY" -m pip config list 2>/dev/null)" && return 0; fi
  PIP_CONFIG_LIST="$(pip3 config list 2>/dev/null || true)"
}
pip_config() {
  printf '%s\n' "$PIP_CONFIG_LIST" | sed -n "s/^[^=]*\.$1=//p" | sed "s/^'//; s/'\$//; s/\\\\n/ /g" \
    | tr ' ' '\n' | sed '/^$/d'
}
# cpu_wheel: the pinned CPU wheel in a local find-links directory of pip's configuration
# (or PIP_FIND_LINKS), empty when none holds it.
cpu_wheel() {
  local d w
  while read -r d; do
    d="${d#file://}"
    for w in "$d"/torch-"$TORCH_PIN"-cp311-*.whl; do
      [[ -f "$w" ]] && { printf '%s\n' "$w"; return 0; }
    done
  done < <({ pip_config find-links; tr ' ' '\n' <<<"${PIP_FIND_LINKS:-}"; } | sed '/^$/d')
  return 0
}
CPU_INDEX=https://download.pytorch.org/whl/cpu
# TORCH_ARGS: pip options for installing the torch lock (PyTorch's CPU index only when the CPU
# wheel lies in no find-links directory, so that a machine that has it never asks that index).
torch_args() {
  TORCH_ARGS=()
  [[ "$VARIANT" != cpu ]] || read_pip_config
  if [[ "$VARIANT" == cpu && -z "$(cpu_wheel)" ]]; then TORCH_ARGS=(--extra-index-url "$CPU_INDEX"); fi
}
# lock_names FILE: the canonical names a lock pins, one a line.
lock_names() { sed -n 's/^\([A-Za-z0-9._-]*\)==.*/\1/p' "$1" | tr 'A-Z_.' 'a-z--' | sort -u; }
# venv_torch: the version of the torch installed in the venv itself (not the system's), or empty.
venv_torch() {
  [[ -x "$VENV/bin/python" ]] || return 0
  "$VENV/bin/python" -c 'import sys, importlib.metadata as m
print(next((d.version for d in m.distributions(name="torch", path=[sys.argv[1]])), ""))' "$SITE" 2>/dev/null || true
}
torch_what() {
  case "$VARIANT" in
    cpu) echo "torch $TORCH_PIN (the CPU build)" ;;
    cuda) local cu; cu="$(sed -n 's/^cuda-toolkit==\([0-9]*\).*/\1/p' "$TORCH_LOCK")"
          echo "torch $TORCH_PIN from PyPI (the CUDA${cu:+ $cu} build) with its nvidia-*, triton and cuda-* wheels" ;;
    system) echo "no torch install: a venv with --system-site-packages, whose torch (JetPack's on a Jetson) must import" ;;
  esac
}
JETSON_NOTE=""
if [[ -f /etc/nv_tegra_release && "$VARIANT" != system ]]; then
  JETSON_NOTE="this is a Jetson: LLAVA3D_TORCH=system uses JetPack's own torch"
fi

# --- --plan: what would be installed, and nothing else ----------------------------------------
if [[ "$MODE" == plan ]]; then
  find_python
  read_pip_config
  plan() { printf '[plan] %-13s %s\n' "$1" "$2"; }
  plan distribution "ROS 2 $DISTRO (LLAVA3D_ROS_DISTRO=${LLAVA3D_ROS_DISTRO:-$DEFAULT_DISTRO})"
  held="$(venv_distro)"
  if [[ ! -x "$VENV/bin/python" ]]; then state="to be created"
  elif [[ -n "$held" && "$held" != "$DISTRO" ]]; then state="exists, holds ROS 2 $held: to be replaced"
  else state="exists"; fi
  [[ "$VARIANT" != system ]] || state="$state, with --system-site-packages"
  plan venv "$VENV ($state)"
  plan torch "$VARIANT ($WHY): $(torch_what)"
  [[ -z "$JETSON_NOTE" ]] || plan note "$JETSON_NOTE"
  index="$(pip_config index-url | head -n1)"
  extra="$(pip_config extra-index-url | tr '\n' ' ')"
  links="$({ pip_config find-links; tr ' ' '\n' <<<"${PIP_FIND_LINKS:-}"; } | sed '/^$/d' | sort -u | tr '\n' ' ')"
  plan index "${index:-https://pypi.org/simple (the pip default)}${extra:+; extra: ${extra% }}${links:+; find-links: ${links% }}"
  case "$VARIANT" in
    cpu) if w="$(cpu_wheel)" && [[ -n "$w" ]]; then plan "torch from" "$w (a find-links directory; no extra index)"
         else plan "torch from" "$CPU_INDEX (added as an extra index: no find-links directory holds torch-$TORCH_PIN)"; fi ;;
    cuda) plan "torch from" "the package index above (torch $TORCH_PIN and its CUDA wheels are on PyPI)" ;;
    system) if [[ -z "$PY" ]]; then found="no Python 3.11 found: the set-up would stop"
            elif v="$(cd /tmp && "$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"; then found="torch $v imports"
            else found="torch does not import there: the set-up would stop"; fi
            plan "torch from" "the system site-packages of $PY ($found)" ;;
  esac
  plan locks "$LOCK${TORCH_LOCK:+ + $TORCH_LOCK}"
  if set_up; then
    todo="nothing (already set up)"
  elif [[ ! -x "$VENV/bin/python" || "$state" == *replaced* ]]; then
    todo="everything: the venv, $LOCK${TORCH_LOCK:+ + $TORCH_LOCK}, the ROS interfaces, the package"
  else
    todo=""
    ssp=false; [[ "$VARIANT" != system ]] || ssp=true
    if ! grep -qx "include-system-site-packages = $ssp" "$VENV/pyvenv.cfg" 2>/dev/null; then
      todo+="set include-system-site-packages = $ssp, install $LOCK${TORCH_LOCK:+ + $TORCH_LOCK}, "
    elif [[ "$(cat "$VENV/.llava3d-deps" 2>/dev/null)" != "$(lock_hash)" ]]; then
      todo+="install $LOCK${TORCH_LOCK:+ + $TORCH_LOCK}, "
    fi
    if [[ "$(cat "$VENV/.llava3d-torch" 2>/dev/null)" != "$(torch_state)" ]]; then
      was="$(cat "$VENV/.llava3d-torch-variant" 2>/dev/null || true)"; now="$(venv_torch)"
      if [[ -n "$was" && "$was" != "$VARIANT" ]]; then todo+="replace torch ($was -> $VARIANT), "
      elif [[ -n "$was" ]]; then todo+="update torch ($TORCH_LOCK changed), "
      elif [[ "$VARIANT" == system && -n "$now" || "$VARIANT" != system && "$now" != "$TORCH_PIN" ]]; then
        todo+="replace torch (${now:-none} -> $VARIANT), "
      fi
    fi
    interfaces_current || todo+="build the ROS interfaces, "
    todo+="check the imports"
  fi
  plan "to do" "$todo"
  say "plan only: nothing installed or created"
  exit 0
fi
say "setting up ROS 2 $DISTRO in $VENV, torch $VARIANT ($WHY)"
[[ -z "$JETSON_NOTE" ]] || say "note: $JETSON_NOTE"

# --- prerequisites -----------------------------------------------------------------------
find_python
if [[ -n "$PY" ]] && ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  die "Python 3.11 is required (the ROS 2 $DISTRO wheels on PyPI are cp311 only); $PY is $("$PY" --version 2>&1 || echo 'not runnable')."
fi
[[ -n "$PY" ]] || die "Python 3.11 is required (the ROS 2 $DISTRO wheels on PyPI are cp311 only); found: $(python3 --version 2>&1 || echo none). Install Python 3.11 or set LLAVA3D_PYTHON=/path/to/python3.11."
"$PY" -c 'import venv, ensurepip' 2>/dev/null || die "$PY lacks venv/ensurepip (Debian: apt-get install python3.11-venv)."
SYSTEM_TORCH_HELP="Install the PyTorch of this platform for Python 3.11 into $PY first (on a Jetson: NVIDIA's JetPack PyTorch wheel, $PY -m pip install torch-<version>-cp311-<platform>.whl), or set LLAVA3D_TORCH=cpu or cuda."
if [[ "$VARIANT" == system ]] && ! err="$(cd /tmp && "$PY" -c 'import torch' 2>&1)"; then
  die "LLAVA3D_TORCH=system, but $PY cannot import torch: $(tail -n1 <<<"$err"). $SYSTEM_TORCH_HELP"
fi
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
held="$(venv_distro)"
if [[ -n "$held" && "$held" != "$DISTRO" ]]; then
  if [[ "$OWN_VENV" == 1 ]]; then
    say "$VENV holds ROS 2 $held (an earlier set-up); replacing it with $DISTRO"
    rm -rf "$VENV"
  else
    die "$VENV (LLAVA3D_VENV) holds ROS 2 $held, not $DISTRO; name another LLAVA3D_VENV or remove it."
  fi
fi
# The system variant's venv sees the system site-packages (their torch); the others do not.
SYSTEM_SITE=false; [[ "$VARIANT" != system ]] || SYSTEM_SITE=true
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV$([[ "$SYSTEM_SITE" == false ]] || echo ' (with the system site-packages)')"
  if [[ "$SYSTEM_SITE" == true ]]; then "$PY" -m venv --system-site-packages "$VENV"; else "$PY" -m venv "$VENV"; fi
elif ! grep -qx "include-system-site-packages = $SYSTEM_SITE" "$VENV/pyvenv.cfg"; then
  say "$VENV: include-system-site-packages = $SYSTEM_SITE"
  sed -i "s/^include-system-site-packages *=.*/include-system-site-packages = $SYSTEM_SITE/" "$VENV/pyvenv.cfg"
  # What pip skipped as satisfied by (or now finds in) the system site-packages changes too.
  rm -f "$VENV/.llava3d-deps"
fi
echo "$DISTRO" > "$VENV/.llava3d-distro"
# git ignores the venv whatever its name (.gitignore names .venv/ only), as Python 3.13's venv does.
[[ -f "$VENV/.gitignore" ]] || printf '# created by tools/setup.sh\n*\n' > "$VENV/.gitignore"

# --- pinned dependencies and torch ---------------------------------------------------------------
# pipq ARGS...: quiet pip in the venv; its exit status, its output less the local index's noise.
pipq() {
  local out rc=0
  out="$("$VENV/bin/pip" --disable-pip-version-check -q "$@" 2>&1)" || rc=$?
  printf '%s\n' "$out" | grep -v -e 'is ignored: it is neither' -e 'as it is not installed' -e '^$' >&2 || true
  return "$rc"
}
# Another torch variant than the one installed: remove what that one brought and the distribution
# lock does not pin (its CUDA wheels), and a venv torch that is not the pinned build.
TORCH_WANT="$(torch_state)"
TORCH_CHANGED=0
[[ "$(cat "$VENV/.llava3d-torch" 2>/dev/null)" == "$TORCH_WANT" ]] || TORCH_CHANGED=1
if [[ "$TORCH_CHANGED" == 1 ]]; then
  remove=()
  if [[ -f "$VENV/.llava3d-torch.lock" ]]; then
    mapfile -t remove < <(comm -23 <(lock_names "$VENV/.llava3d-torch.lock") \
      <({ lock_names "$LOCK"; [[ -z "$TORCH_LOCK" ]] || lock_names "$TORCH_LOCK"; } | sort -u))
  fi
  installed="$(venv_torch)"
  if [[ -n "$installed" && ( "$VARIANT" == system || "$installed" != "$TORCH_PIN" ) ]]; then remove+=(torch); fi
  if (( ${#remove[@]} )); then
    mapfile -t remove < <(printf '%s\n' "${remove[@]}" | sort -u)
    say "removing the earlier torch ($(cat "$VENV/.llava3d-torch-variant" 2>/dev/null || echo "torch $installed")) and the wheels it brought"
    pipq uninstall -y "${remove[@]}" || die "pip could not uninstall the earlier torch."
  fi
fi
if [[ "$VARIANT" == system ]] && ! err="$(cd /tmp && "$VENV/bin/python" -c 'import torch' 2>&1)"; then
  die "LLAVA3D_TORCH=system, but torch does not import in $VENV (it sees the system site-packages of $PY): $(tail -n1 <<<"$err"). $SYSTEM_TORCH_HELP"
fi
if [[ "$MODE" == relock ]]; then
  say "re-resolving requirements-$DISTRO.in${TORCH_LOCK:+ (with $TORCH_LOCK)}"
  torch_args
  pipq install -r "requirements-$DISTRO.in" ${TORCH_LOCK:+-r "$TORCH_LOCK"} "${TORCH_ARGS[@]}" \
    || die "pip could not install requirements-$DISTRO.in."
  "$VENV/bin/python" tools/freeze.py > "$LOCK"
  say "$LOCK rewritten"
fi
DEPS_DONE=0
if [[ "$(cat "$VENV/.llava3d-deps" 2>/dev/null)" != "$(lock_hash)" ]]; then
  say "installing pinned dependencies ($LOCK${TORCH_LOCK:+ + $TORCH_LOCK})"
  torch_args
  pipq install -r "$LOCK" ${TORCH_LOCK:+-r "$TORCH_LOCK"} "${TORCH_ARGS[@]}" \
    || die "the Python dependencies did not install (see the pip output above)."
  DEPS_DONE=1
elif [[ "$TORCH_CHANGED" == 1 && -n "$TORCH_LOCK" ]]; then
  say "installing torch only ($TORCH_LOCK)"
  torch_args
  pipq install -r "$TORCH_LOCK" -c "$LOCK" "${TORCH_ARGS[@]}" \
    || die "torch did not install (see the pip output above)."
  DEPS_DONE=1
fi
if [[ "$DEPS_DONE" == 1 || "$TORCH_CHANGED" == 1 ]]; then
  (cd /tmp && "$VENV/bin/python" -c 'import rclpy, torch, transformers
print(f"[setup] torch {torch.__version__} imports (CUDA: {torch.version.cuda or None}, GPU visible: {torch.cuda.is_available()})")') \
    || die "the Python dependencies do not import (see above)."
  lock_hash > "$VENV/.llava3d-deps"
  if [[ -n "$TORCH_LOCK" ]]; then cp "$TORCH_LOCK" "$VENV/.llava3d-torch.lock"; else : > "$VENV/.llava3d-torch.lock"; fi
  echo "$VARIANT" > "$VENV/.llava3d-torch-variant"
  echo "$TORCH_WANT" > "$VENV/.llava3d-torch"
fi

# --- ROS interfaces: rosidl via CMake from the wheels -------------------------------------
# Rebuilt only when their inputs change (the distribution lock, the interface sources): a new
# torch variant leaves them alone.
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
if interfaces_current; then
  say "ROS interfaces: up to date"
else
  rm -f "$IFACE_STAMP"
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
  iface_inputs_hash > "$IFACE_STAMP"
fi
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
say "done: ROS 2 $DISTRO, torch $VARIANT, $(du -sh "$VENV" | cut -f1) in $VENV"
