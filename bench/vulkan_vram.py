"""GPU memory under Vulkan, four ways at once: the sampler (NVML), nvidia-smi, the Vulkan
device's own free memory (llama.cpp's device list, VK_EXT_memory_budget) and the buffers
llama.cpp allocated.

For the `device` machine with a Vulkan build (bench/device_vulkan.sh `vram`): a Vulkan
llama-server holds a model (the sparse shape of Llama 3 8B in Q8_0) on Vulkan0 in its own
process group; the real sampler agent watches that group at 2 Hz and nvidia-smi is read after
each sample. Prints each reading, the largest sampler/nvidia-smi difference (target within
1 %), what NVML attributes to the process (does it list a Vulkan process at all?), and how far
the used memory rose against the buffers the server printed and the Vulkan free memory fell.

    RPCTUI_BIN_DIR=BIN PYTHONPATH=. python3 bench/vulkan_vram.py [MODEL]
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nvidia_check import against_smi, smi  # noqa: E402 - after the sys.path line above

from rpctui.engine.sampling import Sampler  # noqa: E402 - after the sys.path line above
from rpctui.hosts.local import LocalHost  # noqa: E402 - after the sys.path line above
from rpctui.llama.logs import parse_buffer  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above

PORT = 18090


def _healthy() -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _nvml_lists(pid: int) -> list[str]:
    """Which of NVML's per-process lists hold pid (the sampler reads both)."""
    import pynvml as nv

    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(0)
    return [name for name, listing in (("compute", nv.nvmlDeviceGetComputeRunningProcesses),
                                       ("graphics", nv.nvmlDeviceGetGraphicsRunningProcesses))
            if any(p.pid == pid for p in listing(h))]


def vulkan_free(bin_dir: str) -> dict[str, tuple[float, float]]:
    """device -> (total, free) MiB as the Vulkan backend reports them (llama-bench's list)."""
    out = subprocess.run([f"{bin_dir}/llama-bench", "--list-devices"], capture_output=True,
                         text=True, timeout=60)
    found = re.findall(r"(Vulkan\d+): .*\((\d+) MiB, (\d+) MiB free\)", out.stdout + out.stderr)
    return {name: (float(total), float(free)) for name, total, free in found}


async def main(model: str) -> None:
    bin_dir = os.environ["RPCTUI_BIN_DIR"]
    before_smi, before_vk = smi(), vulkan_free(bin_dir)
    print(f"before: nvidia-smi {before_smi}; Vulkan {before_vk}; model {model}", flush=True)
    log = Path("/tmp/vulkan-holder.log")
    holder = subprocess.Popen([f"{bin_dir}/llama-server", "-m", model, "-ngl", "99", "-c", "4096",
                               "--port", str(PORT), "-lv", "4"], stdout=subprocess.DEVNULL,
                              stderr=log.open("w"), start_new_session=True)
    start = time.monotonic()
    while holder.poll() is None and not _healthy():
        if time.monotonic() - start > 200:
            os.killpg(holder.pid, 9)
            sys.exit(f"llama-server did not come up ({holder.poll()}); its log ends:\n"
                     f"{log.read_text()[-3000:]}")
        time.sleep(0.5)
    if holder.poll() is not None:  # another server on the port answered
        sys.exit(f"llama-server exited ({holder.returncode}): {log.read_text()[-3000:]}")
    print(f"llama-server up after {time.monotonic() - start:.0f} s", flush=True)
    buffers: list = []
    for _ in range(20):  # its log may reach the file a little after /health answers
        buffers = [b for b in map(parse_buffer, log.read_text().splitlines())
                   if b and b.device.startswith("Vulkan")]
        if any(b.kind == "compute" for b in buffers):
            break
        time.sleep(0.5)
    printed = sum(b.mib for b in buffers)
    print("buffers on Vulkan: " + ", ".join(f"{b.kind} {b.mib:.2f}" for b in buffers)
          + f" = {printed:.1f} MiB")
    samples = []
    sampler = Sampler("gpu-node", LocalHost(), sys.executable, 0.5, samples.append,
                      time.monotonic)
    worst, procs = 0.0, 0.0
    try:
        await sampler.start()
        await sampler.watch(holder.pid, "vulkan-holder", PORT)
        worst, procs = await against_smi(samples)
        during_vk = vulkan_free(bin_dir)
        print(f"NVML lists the holder (pid {holder.pid}) as: {_nvml_lists(holder.pid)}")
        after_smi = smi()
    finally:
        await sampler.stop()
        os.killpg(holder.pid, 9)
    if not any(s.gpus for s in samples):
        sys.exit(f"no GPU readings from the sampler (its stderr: {sampler.errors.strip()!r})")
    rose = after_smi[0][0] - before_smi[0][0]
    fell = {d: before_vk[d][1] - during_vk[d][1] for d in during_vk if d in before_vk}
    print(f"while holding: Vulkan {during_vk}")
    print(f"NVML via the sampler against nvidia-smi: largest difference {100 * worst:.2f} % of "
          f"total memory (target <= 1 %)")
    print(f"the holder's buffers {printed:.0f} MiB; nvidia-smi's used rose {rose:.0f} MiB; "
          f"Vulkan's free fell {fell} MiB; NVML attributed {procs:.0f} MiB to the holder's "
          f"process group")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else str(ensure_model("shape-8b-q8"))))
