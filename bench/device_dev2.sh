# Sourced by the device scripts that run rpctui from .dev2 (device_node_build.sh,
# device_local_cuda.sh): rpctui's wheels, its paths under /tmp, and the pinned mainline sdist
# and vocab in its cache, so that nothing is fetched there.
out="${OUT:-/tmp/out}"; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .dev2/whl/*.whl 2>/dev/null
export PYTHONPATH="/tmp/site:$PWD" XDG_CACHE_HOME=/tmp/xdg XDG_DATA_HOME=/tmp/data PYTHONUNBUFFERED=1
mkdir -p /tmp/xdg/rpctui/sdist /tmp/xdg/rpctui/src/x
cp .dev2/llama_cpp_python-0.3.36.tar.gz /tmp/xdg/rpctui/sdist/
cp -r .dev2/cache/src/x/* /tmp/xdg/rpctui/src/x/
