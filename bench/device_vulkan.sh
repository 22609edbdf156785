#!/usr/bin/env bash
# Vulkan under rpctui on the `device` machine (issue 15; docs/PERFORMANCE.md, "Vulkan"):
#  1. rpctui's own mainline build (rpctui.llama.build, the same flags as every build) with
#     -DGGML_VULKAN=ON, against Debian 12's Vulkan loader, headers, glslc and SPIR-V headers
#     (carried as .debs in .dev/deb, unpacked under /tmp/vk: nothing is installed),
#  2. what the build sees: its devices (Vulkan0 and its free memory), GGML_VK_VISIBLE_DEVICES,
#  3. bench/cuda_plan.py with RPCTUI_DEVICE=Vulkan0: two Vulkan rpc-servers and the client's
#     own Vulkan0, planned against allocated buffers, mmap on and off, flash attention.
# Carry .dev (deb/, whl/, cache/, llama-src.tgz: the vendored llama.cpp of the mainline sdist,
# without models/ docs/ tests/). `build` stops after step 2 (the build stays for a next call);
# `scale` runs the scale check (large sparse models' shapes, the recurrent models) at step 3;
# `vram` bench/vulkan_vram.py (GPU memory four ways) in place of step 3; `gdn` Qwen3-Next's
# shapes at step 3; `own` a profile whose node asks for rpctui's build for Vulkan (build and
# backend) run by `rpctui run`, in place of steps 1 to 3.
set -uo pipefail
t0=$(date +%s)
out="${OUT:-/tmp/out}"; mkdir -p "$out"
for f in .dev/deb/*.deb; do dpkg -x "$f" /tmp/vk; done
# the NVIDIA driver's Vulkan ICD (libGLX_nvidia) needs glvnd: the device README's way
for f in .dev/gl/*.deb; do dpkg -x "$f" /; done; ldconfig
lib=/tmp/vk/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$lib PATH=/tmp/vk/usr/bin:$PATH CMAKE_PREFIX_PATH=/tmp/vk/usr
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
python3 -m pip install -q --no-index --no-deps --target /tmp/site .dev/whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" XDG_CACHE_HOME=/tmp/xdg XDG_DATA_HOME=/tmp/data PYTHONUNBUFFERED=1
# FLAVOUR: mainline (default), b6110 or ik, each from its carried source
flavour="${FLAVOUR:-mainline}"
case "$flavour" in
  mainline) src=/tmp/xdg/rpctui/src/llama_cpp_python-0.3.36; tgz=.dev/llama-src.tgz ;;
  b6110) src=/tmp/xdg/rpctui/src/llama_cpp_python-0.3.15; tgz=.dev/src-b6110.tgz ;;
  ik) src=/tmp/xdg/rpctui/src/ik_llama_cpp_python-0.1.5; tgz=.dev/src-ik.tgz ;;
esac
if [ ! -f "$src/.unpacked" ]; then
  mkdir -p "$src/vendor" /tmp/xdg/rpctui/src/x && tar xzf "$tgz" -C "$src/vendor"
  cp -r .dev/cache/src/x/* /tmp/xdg/rpctui/src/x/ && touch "$src/.unpacked"
fi
# ik's build-info script, written where the tree was unpacked first, names that path
find "$src" -name build-info-gen-cpp.cmake -exec sed -i "s|\"[^\"]*/rpctui/src/|\"/tmp/xdg/rpctui/src/|g" {} +
export FLAVOUR=$flavour
nvidia-smi --query-gpu=name,memory.used,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
if [ "${1:-}" = own ]; then  # a profile's own build: build = "mainline", backend = "vulkan"
  export VULKAN_SDK=/tmp/vk/usr
  cat > /tmp/own.toml <<TOML
name = "own-vulkan-build"
[[nodes]]
name = "gpu"
host = "local"
main = true
build = "mainline"
backend = "vulkan"
[[nodes.servers]]
port = 50052
devices = ["Vulkan0"]
[[nodes.servers]]
port = 50053
devices = ["Vulkan0"]
[job]
model = "builtin:tiny-qwen3next"
ngl = 99
prompt_tokens = [512]
gen_tokens = [32]
repetitions = 1
TOML
  t=$(date +%s)
  python3 -m rpctui.cli.main run /tmp/own.toml 2>&1 | tail -40 | tee "$out/own.txt"
  echo "own build and run: $(( $(date +%s) - t )) s" | tee -a "$out/own.txt"
  exit 0
fi
rm -f /tmp/bin_dir
python3 - <<'EOF' 2>&1 | tee "$out/build-$flavour.txt"
import os
import time
from rpctui.llama.build import ensure_build
t = time.time()
b = ensure_build(os.environ["FLAVOUR"], ("-DGGML_VULKAN=ON",
                              "-DVulkan_INCLUDE_DIR=/tmp/vk/usr/include",
                              "-DVulkan_LIBRARY=/tmp/vk/usr/lib/x86_64-linux-gnu/libvulkan.so",
                              "-DVulkan_GLSLC_EXECUTABLE=/tmp/vk/usr/bin/glslc"),
                 progress=lambda m, f: print(m, flush=True) if f in (None, 1.0) else None)
print(f"Vulkan build: {time.time() - t:.0f} s in {b.bin_dir}")
open("/tmp/bin_dir", "w").write(str(b.bin_dir))
EOF
bin=$(cat /tmp/bin_dir 2>/dev/null) || {
  grep -n -B3 -A12 "error\|FAILED" /tmp/xdg/rpctui/build/"$flavour"-*.build.log | head -150 > "$out/errors.txt"
  grep -i "vulkan\|glslc\|spirv\|support" /tmp/xdg/rpctui/build/"$flavour"-*.configure.log >> "$out/errors.txt"
  tail -40 "$out/errors.txt"
  exit 1; }
{ echo "== ggml-rpc-server --help (devices)"
  timeout 20 "$bin/ggml-rpc-server" --help 2>&1 | grep -i -A1 device | head
  echo "== llama-bench --list-devices"; timeout 20 "$bin/llama-bench" --list-devices 2>&1
  echo "== GGML_VK_VISIBLE_DEVICES=0"; GGML_VK_VISIBLE_DEVICES=0 timeout 20 "$bin/llama-bench" --list-devices 2>&1
  echo "== GGML_VK_VISIBLE_DEVICES=''"; GGML_VK_VISIBLE_DEVICES= timeout 20 "$bin/llama-bench" --list-devices 2>&1
} | tee "$out/devices.txt"
echo "setup and build: $(( $(date +%s) - t0 )) s" | tee -a "$out/summary.txt"
[ "${1:-}" = build ] && exit 0
if [ "${1:-}" = vram ]; then  # the sampler, nvidia-smi and Vulkan's own report
  pkill -9 -f "llama-server.*18090" && sleep 2  # a holder an earlier call left
  RPCTUI_BIN_DIR=$bin timeout 280 python3 -u bench/vulkan_vram.py 2>&1 | tee "$out/vulkan_vram.txt"
  exit 0
fi
[ "${1:-}" = gdn ] && export RPCTUI_GDN=1
# `scale`: issue 15's scale check (bench/cuda_plan.py, RPCTUI_SCALE) in place of the plan set
[ "${1:-}" = scale ] && export RPCTUI_SCALE=1
RPCTUI_BIN_DIR=$bin RPCTUI_DEVICE=Vulkan0 timeout "${PLAN_TIMEOUT:-420}" python3 bench/cuda_plan.py \
  2>&1 | tee "$out/vulkan_${1:-plan}-$flavour.txt"
echo "total $(( $(date +%s) - t0 )) s" | tee -a "$out/summary.txt"
