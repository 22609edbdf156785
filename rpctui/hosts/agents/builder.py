# rpctui build agent: sent to a node over SSH, run by its python3 (standard library only).
# Builds llama.cpp on the node from the pinned sdist rpctui sent there, by CONFIG["role"]:
#   inspect: print one JSON object: the machine (architecture, C library, distribution), the
#            build tools it has (cmake, ninja, make, a C++ compiler, ccache, and glslc / the
#            Vulkan headers, nvcc, hipcc for GPU backends), its GPU driver and the compute
#            capabilities of its NVIDIA GPUs, its ROCm (version, hipBLAS and rocBLAS, the AMD
#            GPUs' targets), the free disk under CONFIG["build_dir"], and the builds
#            installed there already (each KEY folder's BUILD.json).
#   build:   unpack CONFIG["sdist"] (once), configure with CONFIG["cmake"], build the targets
#            with ninja (or make), printing {"step": [k, n]} as it goes, then install the
#            binaries into BUILD_DIR/KEY/bin with BUILD.json (what was built, and the RPC
#            protocol its sources speak) and point BUILD_DIR/FLAVOUR at it.
#            An interrupted build resumes: the source and the build tree stay under BUILD_DIR.
#            CONFIG["env"] (the node's env in the profile) joins the build's environment, and
#            the inspection's: tools are found on its PATH, Vulkan headers under VULKAN_SDK.
#            The build ends when this agent's stdin closes (rpctui ended or lost the node).
#            Ends with {"done": {...}} or {"error": ..., "log": [last lines]}.
# CONFIG is prepended by the sender.
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile

cfg = CONFIG  # noqa: F821 - the sender puts CONFIG before this source
BUILD_DIR = os.path.expanduser(cfg["build_dir"])


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def os_release():
    out = {}
    try:
        with open("/etc/os-release") as fh:
            for line in fh:
                k, _, v = line.strip().partition("=")
                out[k] = v.strip('"')
    except OSError:
        pass
    return out


def lines_of(argv):
    try:
        text = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return text.strip().splitlines()


def version_of(argv):
    return (lines_of(argv) or [""])[0]


#: where NVIDIA's installer puts nvcc, which a non-interactive SSH login's PATH leaves out
CUDA_NVCC = "/usr/local/cuda/bin/nvcc"


def node_env():
    """The environment builds run in here: the login's, and the profile's env for the node
    (a PATH with glslc, a VULKAN_SDK...), which the tools and headers are looked up in too."""
    env = dict(os.environ)
    env.update(cfg.get("env", {}))
    return env


def inspect():
    rel = os_release()
    env = node_env()
    tools = {name: shutil.which(name, path=env.get("PATH")) for name in
             ("cmake", "ninja", "make", "c++", "g++", "clang++", "cc", "ccache", "glslc",
              "nvcc", "hipcc", "hipconfig", "nvidia-smi", "tar")}
    if not tools["nvcc"] and os.path.isfile(CUDA_NVCC):
        tools["nvcc"] = CUDA_NVCC
    driver, caps = "", []
    if tools["nvidia-smi"]:
        driver = version_of([tools["nvidia-smi"], "--query-gpu=driver_version",
                             "--format=csv,noheader"])
        caps = lines_of([tools["nvidia-smi"], "--query-gpu=compute_cap", "--format=csv,noheader"])
    installed = {}
    for key in sorted(os.listdir(BUILD_DIR)) if os.path.isdir(BUILD_DIR) else []:
        folder = os.path.join(BUILD_DIR, key)
        if os.path.islink(folder):  # BUILD_DIR/FLAVOUR, the link to the one in use
            continue
        try:
            with open(os.path.join(folder, "BUILD.json")) as fh:
                installed[key] = json.load(fh)
        except (OSError, ValueError):
            pass
    folder = BUILD_DIR
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder) or "/"
    st = os.statvfs(folder)
    compiler = tools["c++"] or tools["g++"] or tools["clang++"]
    # where CMake's FindVulkan looks first: $VULKAN_SDK/include, else the system's
    include = os.path.join(env["VULKAN_SDK"], "include") if env.get("VULKAN_SDK") else "/usr/include"
    say({"arch": platform.machine(), "libc": "-".join(platform.libc_ver()),
         "os": rel.get("ID", ""), "os_like": rel.get("ID_LIKE", ""),
         "os_name": rel.get("PRETTY_NAME", ""), "tools": tools,
         "compiler": version_of([compiler, "--version"]) if compiler else "",
         "vulkan_headers": os.path.isfile(os.path.join(include, "vulkan", "vulkan.h")),
         "vulkan_header_version": vulkan_header_version(
             os.path.join(include, "vulkan", "vulkan_core.h")),
         "rocm": os.path.isdir("/opt/rocm"), **hip(env, tools),
         "driver": driver, "compute_caps": caps,
         "free": st.f_bavail * st.f_frsize, "build_dir": BUILD_DIR, "installed": installed})


def hip(env, tools):
    """ROCm as llama.cpp's HIP build finds it (ROCM_PATH, else /opt/rocm, else /usr): its
    version, whether hipBLAS and rocBLAS's CMake packages are there, and the GPUs' targets
    (gfx_target_version, from the kernel's KFD topology: no ROCm needed to read it)."""
    root = env.get("ROCM_PATH") if os.path.isdir(env.get("ROCM_PATH") or "/nonexistent") else (
        "/opt/rocm" if os.path.isdir("/opt/rocm") else "/usr")
    version = ""
    if tools.get("hipconfig"):
        version = version_of([tools["hipconfig"], "--version"])
    if not version:
        try:
            with open(os.path.join(root, ".info", "version")) as fh:
                version = fh.read().strip()
        except OSError:
            pass
    m = re.match(r"(\d+)\.(\d+)", version)
    libs = [os.path.join(root, sub, "cmake") for sub in
            ("lib", "lib64", f"lib/{platform.machine()}-linux-gnu")]
    targets = []
    topology = "/sys/class/kfd/kfd/topology/nodes"
    for node in sorted(os.listdir(topology)) if os.path.isdir(topology) else []:
        try:
            with open(os.path.join(topology, node, "properties")) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "gfx_target_version" and value.strip() not in ("", "0"):
                        targets.append(value.strip())
        except OSError:
            pass
    return {"rocm_path": root, "hip_version": [int(m.group(1)), int(m.group(2))] if m else None,
            "hip_libs": {name: any(os.path.isdir(os.path.join(d, name)) for d in libs)
                         for name in ("hipblas", "rocblas")},
            "gfx_targets": sorted(set(targets))}


def vulkan_header_version(path):
    """[major, minor, patch] of the Vulkan headers (VK_HEADER_VERSION_COMPLETE), or None."""
    try:
        with open(path, errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    full = re.search(r"VK_HEADER_VERSION_COMPLETE VK_MAKE_API_VERSION\(0, (\d+), (\d+),", text)
    patch = re.search(r"#define VK_HEADER_VERSION (\d+)", text)
    if not (full and patch):
        return None
    return [int(full.group(1)), int(full.group(2)), int(patch.group(1))]


def watch_stdin(proc):
    """rpctui gone (its connection closed, so our stdin): end the build and its compilers."""
    import signal
    import threading

    def wait():
        try:
            sys.stdin.buffer.read()
        except OSError:
            pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except OSError:
                pass

    threading.Thread(target=wait, daemon=True).start()


def tail(path, n=15):
    try:
        with open(path, errors="replace") as fh:
            return fh.read().splitlines()[-n:]
    except OSError:
        return []


def build():
    key, flavour = cfg["key"], cfg["flavour"]
    src_root = os.path.join(BUILD_DIR, "src", cfg["stem"])
    tree = os.path.join(src_root, cfg["vendor"])
    if not os.path.isfile(os.path.join(src_root, ".unpacked")):
        say({"status": "unpacking the sources"})
        shutil.rmtree(src_root, ignore_errors=True)
        os.makedirs(os.path.dirname(src_root), exist_ok=True)
        with tarfile.open(os.path.expanduser(cfg["sdist"])) as tar:
            try:
                tar.extractall(os.path.dirname(src_root), filter="data")
            except TypeError:  # Python before 3.12 and without the backported filter
                tar.extractall(os.path.dirname(src_root))
        if cfg.get("build_info"):
            common = os.path.join(tree, "common")
            gen = os.path.join(common, "cmake", "build-info-gen-cpp.cmake")
            if os.path.isfile(os.path.join(common, "build-info.cpp.in")) and not os.path.isfile(gen):
                os.makedirs(os.path.dirname(gen), exist_ok=True)
                with open(gen, "w") as fh:
                    fh.write(cfg["build_info"].replace("@COMMON@", common)
                             .replace("@TARGET@", f"{platform.machine()}-linux-gnu"))
        with open(os.path.join(src_root, ".unpacked"), "w") as fh:
            fh.write("ok\n")
    build_tree = os.path.join(BUILD_DIR, "build", key)
    logs = os.path.join(BUILD_DIR, "build")
    os.makedirs(logs, exist_ok=True)
    # The C locale, as rpctui's own builds use: ccache hashes LANG and LC_*, so objects compiled
    # on the main machine (or by an earlier build here) are hits only under the same locale.
    env = {k: v for k, v in os.environ.items() if k not in ("LC_CTYPE", "LC_MESSAGES")}
    env.update(LANG="C", LC_ALL="C", CCACHE_BASEDIR=BUILD_DIR, **cfg.get("env", {}))
    path = env.get("PATH")  # the tools as the inspection found them: the node's env's PATH
    generator = ["-G", "Ninja"] if shutil.which("ninja", path=path) else []
    cmake = ["cmake", "-S", tree, "-B", build_tree, *generator, *cfg["cmake"]]
    if shutil.which("ccache", path=path):
        cmake += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
        if cfg.get("backend") == "cuda":
            cmake += ["-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache"]
    hipconfig = shutil.which("hipconfig", path=path)
    if cfg.get("backend") == "rocm" and hipconfig and not env.get("HIPCXX"):
        # as llama.cpp's build docs run it: HIPCXX="$(hipconfig -l)/clang" HIP_PATH=...
        env["HIPCXX"] = os.path.join(version_of([hipconfig, "-l"]), "clang")
        env.setdefault("HIP_PATH", version_of([hipconfig, "-R"]))
    if (cfg.get("backend") == "cuda" and not env.get("CUDACXX")
            and not shutil.which("nvcc", path=path) and os.path.isfile(CUDA_NVCC)):
        env["CUDACXX"] = CUDA_NVCC  # where the inspection found it: off a login's PATH
    say({"status": "configuring"})
    log = os.path.join(logs, key + ".configure.log")
    with open(log, "w") as fh:
        rc = subprocess.run(cmake, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        say({"error": f"cmake failed (exit {rc})", "log": tail(log), "log_path": log})
        return
    jobs = str(cfg.get("jobs") or os.cpu_count() or 2)
    argv = ["cmake", "--build", build_tree, "-j", jobs, "--target", *cfg["targets"]]
    log = os.path.join(logs, key + ".build.log")
    step = re.compile(r"^\[\s*(\d+)/(\d+)\]|^\[\s*(\d+)%\]")
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, start_new_session=True)
        watch_stdin(proc)
        for line in proc.stdout:
            fh.write(line)
            m = step.match(line)
            if m and m.group(1):
                say({"step": [int(m.group(1)), int(m.group(2))]})
            elif m and not generator:
                # make's percentages; under ninja they come from a nested project (Vulkan's
                # shader generator) and would make the step go back and forth
                say({"step": [int(m.group(3)), 100]})
        rc = proc.wait()
    if rc != 0:
        say({"error": f"the build failed (exit {rc})", "log": tail(log), "log_path": log})
        return
    out = os.path.join(BUILD_DIR, key)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "bin"))
    for target in cfg["targets"]:
        shutil.copy2(os.path.join(build_tree, "bin", target), os.path.join(tmp, "bin", target))
        subprocess.run(["strip", os.path.join(tmp, "bin", target)], check=False)
    compiler = (shutil.which("c++", path=path) or shutil.which("g++", path=path)
                or shutil.which("clang++", path=path))
    record = {"flavour": flavour, "version": cfg["version"], "key": key,
              "commit": cfg["commit"], "number": cfg["number"], "backend": cfg["backend"],
              "protocol": rpc_protocol(tree),
              "compiler": version_of([compiler, "--version"]) if compiler else "",
              "arch": platform.machine(), "libc": "-".join(platform.libc_ver()),
              "cmake": cfg["cmake"], "targets": cfg["targets"]}
    with open(os.path.join(tmp, "BUILD.json"), "w") as fh:
        json.dump(record, fh, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    link(flavour, key)
    say({"done": record})


def rpc_protocol(tree):
    """The RPC protocol the sources speak (ggml-rpc.h's major.minor.patch), or ""."""
    parts = {}
    try:
        with open(os.path.join(tree, "ggml", "include", "ggml-rpc.h"), errors="replace") as fh:
            for line in fh:
                m = re.match(r"#define RPC_PROTO_(MAJOR|MINOR|PATCH)_VERSION\s+(\d+)", line)
                if m:
                    parts[m.group(1)] = m.group(2)
    except OSError:
        return ""
    return ".".join(parts.get(k, "0") for k in ("MAJOR", "MINOR", "PATCH")) if parts else ""


def link(flavour, key):
    """BUILD_DIR/FLAVOUR -> KEY: what a profile's `build = FLAVOUR` runs on this node."""
    path = os.path.join(BUILD_DIR, flavour)
    tmp = path + ".link"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(key, tmp)
    os.replace(tmp, path)


role = cfg["role"]
if role == "inspect":
    inspect()
elif role == "link":
    if os.path.isfile(os.path.join(BUILD_DIR, cfg["key"], "BUILD.json")):
        link(cfg["flavour"], cfg["key"])
        say({"done": True})
    else:
        say({"error": f"{BUILD_DIR}/{cfg['key']} holds no finished build"})
else:
    build()
    # The stdin watcher thread is blocked in a read: a normal interpreter exit aborts on its
    # buffer lock ("Fatal Python error: _enter_buffered_busy"); leave without that.
    sys.stdout.flush()
    os._exit(0)
