"""Vulkan without a GPU: mainline built with GGML_VULKAN and run on Mesa's lavapipe (a Vulkan
driver on the CPU, which ggml-vulkan lists only when GGML_VK_VISIBLE_DEVICES names it), so the
Vulkan paths stay tested on every machine (scripts/setup installs the driver and builds it)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rpctui.llama.build import BACKEND_CMAKE, ensure_build, vulkan_header_version
from rpctui.llama.tinymodel import ensure_model
from rpctui.paths import cache_dir
from tests.conftest import recorded_events, rpctui, rpctui_env

pytestmark = pytest.mark.rig

#: where scripts/setup unpacks Debian 13's Vulkan headers (mainline needs 1.3.261 or newer)
HEADERS = "vulkan-headers-debian13"


def vulkan_bin() -> str:
    """mainline's Vulkan build (scripts/setup makes it; built here if it is missing)."""
    sdk = cache_dir() / HEADERS / "usr"
    os.environ.setdefault("VULKAN_SDK", str(sdk))
    return str(ensure_build("mainline", BACKEND_CMAKE["vulkan"]).bin_dir)


def lavapipe_profile(path: Path, model: str, job: str = "", own_build: bool = False) -> Path:
    """Two rpc-servers on lavapipe's Vulkan0 and the client's own, all on this machine (its
    binaries named by bin_dir, or ``own_build``: `build = "mainline"` for `backend =
    "vulkan"`, which rpctui resolves to the same cached build). The
    bench measures prompt processing only: Debian 12's lavapipe (Mesa 22.3) crashes in an
    rpc-server that runs a generation after a prompt in one session (a segfault in
    libvulkan_lvp.so's worker thread, reproduced with llama-bench alone; either one alone
    runs)."""
    bin_dir = vulkan_bin()
    where = 'build = "mainline"\nbackend = "vulkan"' if own_build else f'bin_dir = "{bin_dir}"'
    servers = "".join(f'[[nodes.servers]]\nport = {port}\nthreads = 1\ndevices = ["Vulkan0"]\n\n'
                      for port in (50352, 50353))
    path.write_text(
        f'name = "lavapipe"\nheadroom_mib = 0\n\n[[nodes]]\nname = "cpu-vk"\nhost = "local"\n'
        f'main = true\n{where}\nenv = {{ GGML_VK_VISIBLE_DEVICES = "0" }}\n\n'
        f'{servers}[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [64]\ngen_tokens = [0]\n'
        f'repetitions = 1\n{job}')
    return path


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name,job,own_build", [
    ("tiny", "", False), ("tiny-swa", "tensor_split = [1, 1, 2]\n", False),
    ("tiny-granite-hybrid", "", True)])
def test_vulkan_servers_on_lavapipe_load_as_planned(tmp_path: Path, name: str, job: str,
                                                    own_build: bool) -> None:
    """Vulkan rpc-servers and a Vulkan client under rpctui, on lavapipe: the probe names the
    device and its memory, the job runs, every model and KV buffer is what the plan said and
    no compute buffer is above its estimate (the Vulkan on lavapipe row of the accuracy
    table in docs/PERFORMANCE.md). A node with `build` and `backend = "vulkan"` runs
    rpctui's Vulkan build."""
    model = str(ensure_model(name))
    profile = lavapipe_profile(tmp_path / "p.toml", model, job, own_build)
    plan = rpctui(tmp_path, "plan", str(profile), "--json", timeout=300)
    assert plan.returncode == 0, plan.stderr
    rows = {r["device"]: r for r in json.loads(plan.stdout)["devices"] if r["scope"] != "node"}
    assert {"RPC0[127.0.0.1:50352]", "RPC0[127.0.0.1:50353]", "Vulkan0"} <= set(rows)
    run = rpctui(tmp_path, "run", str(profile), timeout=800)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(r"Vulkan0 \d+/\d+ MiB free", run.stderr), run.stderr[:2000]
    events = recorded_events(tmp_path)
    probed = next(e for e in events if e["type"] == "NodeProbed")
    assert any(d[0] == "Vulkan0" and "llvmpipe" in json.dumps(d) for d in probed["devices"]), probed
    checked = next(e for e in events if e["type"] == "PlanChecked")
    for device, _planned_model, got_model, planned_kv, got_kv in checked["rows"]:
        assert abs(rows[device]["model_mib"] - got_model) <= 0.01, (device, checked)
        # a window model's or a hybrid's device prints two KV lines, each rounded
        assert abs(planned_kv - got_kv) <= 0.011, (device, checked)
    assert checked["compute"]
    for device, est, got in checked["compute"]:
        print(f"LAVAPIPE {name} {device} est {est:.2f} got {got:.2f}")
        assert est >= got - 0.005, (device, est, got)


def test_vulkan_build_refuses_headers_too_old(tmp_path: Path) -> None:
    """`rpctui build --backend vulkan` against headers older than mainline's 1.3.261 (Debian
    12's, which fail to compile ggml-vulkan.cpp) stops at once, naming both versions and the
    way to newer ones; VULKAN_SDK pointing at newer headers passes that check."""
    system = vulkan_header_version(Path("/usr/include/vulkan/vulkan_core.h"))
    newer = vulkan_header_version(cache_dir() / HEADERS / "usr" / "include" / "vulkan" /
                                  "vulkan_core.h")
    assert system is not None and newer is not None and newer >= (1, 3, 261)
    # an empty cache (no build to find, nothing downloaded yet), the system's headers
    env = {**rpctui_env(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("VULKAN_SDK", None)
    argv = [sys.executable, "-m", "rpctui.cli.main", "build", "mainline", "--backend", "vulkan"]
    if system >= (1, 3, 261):
        pytest.skip("this machine's own Vulkan headers are new enough: nothing to refuse")
    old = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert old.returncode == 2, old.stderr
    assert (f"mainline needs Vulkan headers 1.3.261 or newer; /usr/include/vulkan/vulkan_core.h "
            f"is {'.'.join(map(str, system))}") in old.stderr
    assert "set VULKAN_SDK" in old.stderr
    assert not (tmp_path / "cache" / "rpctui" / "sdist").exists()  # refused before any download
    # a build that names its headers (-DVulkan_INCLUDE_DIR=, as bench/device_vulkan.sh does)
    # is checked against those
    from rpctui.errors import UserError
    from rpctui.llama.build import FLAVOURS, check_vulkan_headers

    named = cache_dir() / HEADERS / "usr" / "include"
    check_vulkan_headers(FLAVOURS["mainline"], ("-DGGML_VULKAN=ON",
                                                f"-DVulkan_INCLUDE_DIR={named}"))
    with pytest.raises(UserError):
        check_vulkan_headers(FLAVOURS["mainline"], ("-DGGML_VULKAN=ON",
                                                    "-DVulkan_INCLUDE_DIR=/usr/include"))
    # the same with VULKAN_SDK at the newer headers gets past the check (to the download,
    # which an empty cache needs: stopped there, with no registry asked)
    env["VULKAN_SDK"] = str(cache_dir() / HEADERS / "usr")
    env["PIP_INDEX_URL"] = "http://127.0.0.1:9/simple"
    env["PIP_NO_INDEX"] = "1"
    newer_run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert "needs Vulkan headers" not in newer_run.stderr, newer_run.stderr
    assert "could not download llama-cpp-python==0.3.36" in newer_run.stderr, newer_run.stderr
