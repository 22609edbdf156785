#!/usr/bin/env bash
# Makes .dev/, what the device scripts carry (bench/device_vulkan.sh, device_check.sh, ...):
#   deb/   Vulkan headers (Debian 13's libvulkan-dev: the pinned mainline needs 1.3.261 or
#          later, Debian 12 has 1.3.239), Debian 12's loader, glslc and SPIR-V headers
#   gl/    the loaders the NVIDIA driver's Vulkan ICD needs (the device README's list)
#   whl/   gguf and tomlkit, which the device image lacks (it has numpy, pyyaml, nvidia-ml-py)
#   llama-src.tgz  the mainline sdist's llama.cpp, without models/ docs/ tests/
#   src-b6110.tgz, src-ik.tgz  the same of the other two flavours
#   cache/src/x/vendor/llama.cpp/models/  the vocab tinymodel copies into generated models
# Run here (it needs Debian's and PyPI's registries); scripts/setup first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/rpctui"
dev="$here/.dev"
mkdir -p "$dev/deb" "$dev/gl" "$dev/whl" "$dev/cache/src/x/vendor/llama.cpp/models"
apt_dir=$(mktemp -d)
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
echo "deb http://deb.debian.org/debian trixie main" > "$apt_dir/trixie.list"
o=(-oDir::Etc::SourceList="$apt_dir/trixie.list" -oDir::Etc::SourceParts=/dev/null
   -oDir::State::Lists="$apt_dir/lists" -oDir::Cache="$apt_dir/cache")
apt-get "${o[@]}" update -qq
(cd "$dev/deb" && apt-get "${o[@]}" download libvulkan-dev 2>/dev/null)
(cd "$dev/deb" && apt-get download libvulkan1 glslc libshaderc1 spirv-headers 2>/dev/null)
(cd "$dev/gl" && apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 \
  libgles2 2>/dev/null)
rm -rf "$apt_dir"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$dev/whl" "gguf>=0.17" "tomlkit>=0.12"
src="$cache/src/llama_cpp_python-0.3.36/vendor/llama.cpp"
tar czf "$dev/llama-src.tgz" -C "$(dirname "$src")" --exclude=llama.cpp/models \
  --exclude=llama.cpp/docs --exclude=llama.cpp/tests --exclude=llama.cpp/tools/server/webui \
  --exclude=llama.cpp/.git llama.cpp
cp "$src/models/ggml-vocab-llama-spm.gguf" "$dev/cache/src/x/vendor/llama.cpp/models/"
# the other flavours' trees, for FLAVOUR=b6110 / ik bench/device_vulkan.sh
for pair in "b6110 llama_cpp_python-0.3.15/vendor/llama.cpp" \
            "ik ik_llama_cpp_python-0.1.5/vendor/ik_llama.cpp"; do
  set -- $pair
  tree="$cache/src/$2"
  tar czf "$dev/src-$1.tgz" -C "$(dirname "$tree")" --exclude="*/models" --exclude="*/docs" \
    --exclude="*/tests" --exclude="*/.git" --exclude="*/examples/server/webui" "$(basename "$tree")"
done
du -sh "$dev"/*
