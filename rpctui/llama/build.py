"""Building llama.cpp with the RPC backend from a pinned registry sdist.

No registry ships prebuilt ``rpc-server``/``llama-bench`` for Linux, but the
PyPI sdists of ``llama-cpp-python`` and ``ik-llama-cpp-python`` carry a whole
llama.cpp tree. :func:`ensure_build` downloads one, configures it with
``GGML_RPC=ON`` and builds only the tools rpctui drives, into a per-user cache
keyed by flavour, version and flags. A finished build holds ``BUILD.json``;
anything without it is an interrupted build and is redone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rpctui.errors import UserError
from rpctui.paths import cache_dir


@dataclass(frozen=True)
class Flavour:
    """One llama.cpp lineage, pinned to the sdist that vendors it."""

    name: str
    package: str
    version: str
    vendor: str  #: path of the llama.cpp tree inside the sdist
    targets: tuple[str, ...]
    build_number: int
    build_commit: str
    description: str
    extra_cmake: tuple[str, ...] = field(default=())
    #: the oldest Vulkan headers a -DGGML_VULKAN=ON build compiles against (None: not known)
    vulkan_headers: tuple[int, int, int] | None = None
    #: the oldest ROCm/HIP a -DGGML_HIP=ON build configures with (its CMakeLists' FATAL_ERROR)
    hip_version: tuple[int, int] | None = None

    @property
    def sdist_stem(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}"


FLAVOURS: dict[str, Flavour] = {
    f.name: f
    for f in (
        Flavour(
            name="mainline",
            package="llama-cpp-python",
            version="0.3.36",
            vendor="vendor/llama.cpp",
            targets=("ggml-rpc-server", "llama-bench", "llama-completion", "llama-server"),
            # The reference dates this tree to commit 0c1e570 (2026-10-01, about b11312).
            build_number=11312,
            build_commit="0c1e570",
            description="current mainline llama.cpp (RPC protocol 7)",
            # ggml-vulkan.cpp needs VK_EXT_layer_settings (vk::LayerSettingsCreateInfoEXT),
            # new in 1.3.261: Debian 12's 1.3.239 fails to compile it (seen here)
            vulkan_headers=(1, 3, 261),
            hip_version=(6, 1),  # ggml-hip/CMakeLists.txt: "At least ROCM/HIP V6.1 is required"
        ),
        Flavour(
            name="b6110",
            package="llama-cpp-python",
            version="0.3.15",
            vendor="vendor/llama.cpp",
            targets=("rpc-server", "llama-bench", "llama-cli"),
            build_number=6110,
            build_commit="9a963895",
            description="seed-era mainline llama.cpp b6110 (RPC protocol 2)",
            hip_version=(5, 5),  # "At least ROCM/HIP V5.5 is required"
        ),
        Flavour(
            name="ik",
            package="ik-llama-cpp-python",
            version="0.1.5",
            vendor="vendor/ik_llama.cpp",
            targets=("rpc-server", "llama-bench", "llama-cli"),
            build_number=4411,
            build_commit="55d3c05b",
            description="ik_llama.cpp build 4411 (RPC protocol 3)",
            # ik keeps its tools under examples/, which the base flags leave out.
            extra_cmake=("-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_SERVER=OFF"),
        ),
    )
}

DEFAULT_FLAVOUR = "mainline"

BASE_CMAKE = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DGGML_RPC=ON",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)

#: The file ik-llama-cpp-python's sdist leaves out; it only writes build-info.cpp (written
#: here for local builds, by the build agent on nodes).
BUILD_INFO_TEMPLATE = """\
set(BUILD_NUMBER {number})
set(BUILD_COMMIT "{commit}")
set(BUILD_COMPILER "${{CMAKE_C_COMPILER_ID}} ${{CMAKE_C_COMPILER_VERSION}}")
set(BUILD_TARGET "{target}")
configure_file("{common}/build-info.cpp.in" "{common}/build-info.cpp" @ONLY)
"""

Progress = Callable[[str, float | None], None]
"""Called with a one-line status and the fraction done (None when unknown)."""


@dataclass(frozen=True)
class Build:
    """A finished build: where its binaries are and what it reports."""

    flavour: str
    version: str
    bin_dir: Path
    key: str


#: the flags of each backend's build, here and on the nodes
BACKEND_CMAKE: dict[str, tuple[str, ...]] = {
    "cpu": (), "cuda": ("-DGGML_CUDA=ON",), "vulkan": ("-DGGML_VULKAN=ON",),
    "rocm": ("-DGGML_HIP=ON",),
}


def cuda_archs(compute_caps: Iterable[str]) -> list[str]:
    """CMake's names for GPUs of these compute capabilities ("9.0" -> "90", as nvidia-smi's
    compute_cap prints them), sorted, once each; anything else is left out."""
    archs = {c.strip().replace(".", "") for c in compute_caps
             if re.fullmatch(r"\d+\.\d+", c.strip())}
    return sorted(archs, key=int)


def backend_cmake(backend: str, compute_caps: Iterable[str] = ()) -> tuple[str, ...]:
    """The cmake flags of a build for ``backend``. A CUDA build is for the compute capabilities
    of the GPUs it will run on, where they are known: with GGML_NATIVE off (builds are copied
    between nodes), llama.cpp's own list compiles every kernel for seven or more architectures
    (on the H200: step 118 of 364 after 530 s, against the whole build for sm_90 in 245 s)."""
    flags = BACKEND_CMAKE[backend]
    archs = cuda_archs(compute_caps)
    if backend == "cuda" and archs:
        flags += (f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(archs)}",)
    return flags


def local_compute_caps() -> list[str]:
    """The compute capabilities of this machine's NVIDIA GPUs (none without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return out.split()


def local_backend_cmake(backend: str) -> tuple[str, ...]:
    """The flags of a build here for ``backend`` (for CUDA, this machine's GPUs)."""
    return backend_cmake(backend, local_compute_caps() if backend == "cuda" else ())


def vulkan_header_version(path: Path) -> tuple[int, int, int] | None:
    """(major, minor, patch) of the Vulkan headers at ``path`` (vulkan_core.h), or None.
    hosts/agents/builder.py reads a node's the same way (it runs with the standard library
    alone, so it has its own copy)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    full = re.search(r"VK_HEADER_VERSION_COMPLETE VK_MAKE_API_VERSION\(0, (\d+), (\d+),", text)
    patch = re.search(r"#define VK_HEADER_VERSION (\d+)", text)
    if not (full and patch):
        return None
    return int(full.group(1)), int(full.group(2)), int(patch.group(1))


def vulkan_headers(cmake_args: tuple[str, ...] = ()) -> Path:
    """Where the build takes Vulkan's headers from: -DVulkan_INCLUDE_DIR= when given, else
    where CMake's FindVulkan looks first: $VULKAN_SDK/include (LunarG's SDK, or any tree of
    newer headers), else /usr/include."""
    for arg in cmake_args:
        if arg.startswith("-DVulkan_INCLUDE_DIR="):
            return Path(arg.split("=", 1)[1])
    sdk = os.environ.get("VULKAN_SDK")
    return Path(sdk) / "include" if sdk else Path("/usr/include")


def check_vulkan_headers(flavour: Flavour, cmake_args: tuple[str, ...] = ()) -> None:
    """Refuse a Vulkan build of a flavour the headers here are too old for, before it fails
    minutes into compiling."""
    header = vulkan_headers(cmake_args) / "vulkan" / "vulkan_core.h"
    have = vulkan_header_version(header)
    if have is None:
        raise UserError(f"no Vulkan headers at {header.parent}: a Vulkan build needs them and "
                        f"glslc", "install libvulkan-dev and glslc (Debian, Ubuntu), or point "
                        "VULKAN_SDK at LunarG's Vulkan SDK")
    need = flavour.vulkan_headers
    if need and have < need:
        raise UserError(
            f"{flavour.name} needs Vulkan headers {'.'.join(map(str, need))} or newer; "
            f"{header} is {'.'.join(map(str, have))}",
            "install newer headers (Debian 13's libvulkan-dev, or LunarG's Vulkan SDK) and "
            "set VULKAN_SDK to the folder that holds their include/")


def build_key(flavour: Flavour, cmake_args: tuple[str, ...] = ()) -> str:
    flags = "\0".join(BASE_CMAKE + flavour.extra_cmake + cmake_args + flavour.targets)
    digest = hashlib.sha256(flags.encode()).hexdigest()[:10]
    return f"{flavour.name}-{flavour.version}-{digest}"


def build_root() -> Path:
    return cache_dir() / "llama"


def find_build(name: str = DEFAULT_FLAVOUR, cmake_args: tuple[str, ...] = ()) -> Build | None:
    """The cached build of this flavour and flags, or None when there is none yet."""
    flavour = _flavour(name)
    key = build_key(flavour, cmake_args)
    out = build_root() / key
    if not (out / "BUILD.json").is_file():
        return None
    return Build(flavour.name, flavour.version, out / "bin", key)


def ensure_build(
    name: str = DEFAULT_FLAVOUR,
    cmake_args: tuple[str, ...] = (),
    progress: Progress | None = None,
    jobs: int | None = None,
) -> Build:
    """Return the cached build, building it first when absent (minutes, once)."""
    found = find_build(name, cmake_args)
    if found:
        return found
    flavour = _flavour(name)
    if "-DGGML_VULKAN=ON" in cmake_args:
        check_vulkan_headers(flavour, cmake_args)
    key = build_key(flavour, cmake_args)
    report = progress or (lambda _msg, _frac: None)
    lock_path = cache_dir() / "build" / f"{key}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        # Another rpctui (or a test run) may be building the same thing: wait for it.
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(f"waiting for another build of {flavour.name} to finish", None)
            fcntl.flock(lock, fcntl.LOCK_EX)
        found = find_build(name, cmake_args)
        if found:
            return found
        return _build_locked(flavour, key, cmake_args, report, jobs)


def _build_locked(flavour: Flavour, key: str, cmake_args: tuple[str, ...], report: Progress,
                  jobs: int | None) -> Build:
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            raise UserError(
                f"building llama.cpp needs {tool!r}, which is not on PATH",
                "install it (Debian: apt-get install cmake ninja-build g++) or point the "
                "profile's bin_dir at an existing llama.cpp build",
            )
    src = _unpacked_source(flavour, report)
    build_dir = cache_dir() / "build" / key
    out = build_root() / key
    # an earlier attempt that failed leaves its CMake cache: found tools and headers (old
    # Vulkan headers, say) stay cached there; configure afresh, keep the compiled objects
    (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
    cmake = [
        "cmake", "-S", str(src), "-B", str(build_dir), "-G", "Ninja",
        *BASE_CMAKE, *flavour.extra_cmake, *cmake_args,
        f"-DLLAMA_BUILD_NUMBER={flavour.build_number}",
        f"-DLLAMA_BUILD_COMMIT={flavour.build_commit}",
    ]
    if shutil.which("ccache"):
        cmake += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    report(f"configuring {flavour.name} ({flavour.package} {flavour.version})", None)
    _run_logged(cmake, build_dir.parent / f"{key}.configure.log")
    jobs = jobs or os.cpu_count() or 2
    ninja = ["cmake", "--build", str(build_dir), "-j", str(jobs), "--target", *flavour.targets]
    _run_with_progress(ninja, build_dir.parent / f"{key}.build.log", flavour, report)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    for target in flavour.targets:
        binary = build_dir / "bin" / target
        shutil.copy2(binary, tmp / "bin" / target)
        subprocess.run(["strip", str(tmp / "bin" / target)], check=False)
    (tmp / "BUILD.json").write_text(json.dumps({
        "flavour": flavour.name, "package": flavour.package, "version": flavour.version,
        "cmake": cmake[7:], "targets": list(flavour.targets),
    }, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    report(f"built {flavour.name} into {out}", 1.0)
    return Build(flavour.name, flavour.version, out / "bin", key)


def _flavour(name: str) -> Flavour:
    try:
        return FLAVOURS[name]
    except KeyError:
        raise UserError(
            f"unknown llama.cpp flavour {name!r}",
            f"choose one of: {', '.join(FLAVOURS)}",
        ) from None


def sdist_path(flavour: Flavour, report: Progress) -> Path:
    """The sdist archive, downloaded with pip once and kept in the cache."""
    folder = cache_dir() / "sdist"
    archive = folder / f"{flavour.sdist_stem}.tar.gz"
    if archive.is_file():
        return archive
    folder.mkdir(parents=True, exist_ok=True)
    report(f"downloading {flavour.package}=={flavour.version} (sdist, about a minute)", None)
    proc = subprocess.run(sdist_download_argv(flavour, folder), capture_output=True, text=True)
    if proc.returncode != 0 or not archive.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise UserError(
            f"could not download {flavour.package}=={flavour.version}:\n{tail}",
            "check that PyPI is reachable, or put the sdist at " + str(archive),
        )
    return archive


def sdist_download_argv(flavour: Flavour, folder: Path) -> list[str]:
    """pip's own download of the sdist, through whatever index the user's pip is set up for.

    pip prepares an sdist's metadata before it keeps the file, which needs the sdist's build
    backend (scikit-build-core). Build isolation (pip's default) installs that backend into a
    throw-away environment; ``--no-build-isolation`` would need it in rpctui's own venv, which a
    fresh machine does not have (issue 9: the README's first command failed that way).
    """
    return [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
            "--no-binary", ":all:", f"{flavour.package}=={flavour.version}", "-d", str(folder)]


def _unpacked_source(flavour: Flavour, report: Progress) -> Path:
    root = cache_dir() / "src" / flavour.sdist_stem
    tree = root / flavour.vendor
    if (root / ".unpacked").is_file():
        return tree
    archive = sdist_path(flavour, report)
    report(f"unpacking {archive.name}", None)
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root.parent, filter="data")
    gen = tree / "common" / "cmake" / "build-info-gen-cpp.cmake"
    if (tree / "common" / "build-info.cpp.in").is_file() and not gen.is_file():
        gen.parent.mkdir(parents=True, exist_ok=True)
        gen.write_text(BUILD_INFO_TEMPLATE.format(
            number=flavour.build_number, commit=flavour.build_commit,
            target=f"{os.uname().machine}-linux-gnu", common=tree / "common",
        ))
    (root / ".unpacked").write_text("ok\n")
    return tree


#: ccache hashes the locale (LANG, LC_ALL, LC_CTYPE, LC_MESSAGES): a build here under LANG=C.UTF-8
#: and one on a node started by sshd (no LANG) would never share an object. Builds run in the C
#: locale, here and on the nodes (hosts/agents/builder.py does the same).
BUILD_LOCALE = {"LANG": "C", "LC_ALL": "C"}


def _build_env() -> dict[str, str]:
    """ccache keyed on paths relative to rpctui's cache: a build under another cache root (a
    fresh XDG_CACHE_HOME, say) or a node's build_dir finds the same compiled objects."""
    env = {k: v for k, v in os.environ.items() if k not in ("LC_CTYPE", "LC_MESSAGES")}
    return {**env, **BUILD_LOCALE, "CCACHE_BASEDIR": str(cache_dir())}


def _run_logged(argv: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=_build_env())
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise UserError(f"{argv[0]} failed (exit {proc.returncode}):\n{tail}", f"full log: {log}")


_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")


def _run_with_progress(argv: list[str], log: Path, flavour: Flavour, report: Progress) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh, subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_build_env()
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            step = _NINJA_STEP.match(line)
            if step:
                done, total = int(step.group(1)), int(step.group(2))
                report(f"building {flavour.name}: step {done}/{total}", done / total)
        rc = proc.wait()
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise UserError(f"building {flavour.name} failed (exit {rc}):\n{tail}", f"full log: {log}")
