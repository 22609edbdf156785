"""NVIDIA readings of the sampler against nvidia-smi, taken at the same moment.

For the `device` machine (an NVIDIA GPU, NVML through nvidia-ml-py): a process holds GPU
memory (PyTorch), the real sampler agent watches its process group at 2 Hz, and after each
sample nvidia-smi is asked for memory.used/memory.total. Prints both and the largest
relative difference (target: within 1 %), and the per-process memory NVML attributed.

    PYTHONPATH=. python3 bench/nvidia_check.py [GIB]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from rpctui.engine.sampling import Sampler
from rpctui.hosts.local import LocalHost

HOLDER = """
import os, sys, time, torch
os.setsid()
x = torch.empty(int(float(sys.argv[1]) * 2**30), dtype=torch.uint8, device="cuda")
x.fill_(1); torch.cuda.synchronize()
print("ready", flush=True)
time.sleep(120)
"""


def smi() -> list[tuple[float, float]]:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         check=True).stdout
    return [tuple(float(v) for v in line.split(",")) for line in out.strip().splitlines()]


async def against_smi(samples: list, count: int = 6) -> tuple[float, float]:
    """Read nvidia-smi right after each of the sampler's next ``count`` samples and print both;
    (the largest difference as a fraction of total memory, the most MiB NVML attributed to
    the watched process groups)."""
    worst, procs, seen = 0.0, 0.0, 0
    while seen < count:
        await asyncio.sleep(0.05)
        if len(samples) > seen:
            reference = smi()
            sample = samples[seen]
            seen += 1
            pairs = zip(sample.gpus, reference, strict=False)
            for (name, kind, used, total, *_), (s_used, s_total) in pairs:
                diff = abs(used - s_used) / s_total
                worst = max(worst, diff)
                procs = max(procs, sum(mib for _, mib in sample.gpu_procs))
                print(f"  sample {seen}: {name} ({kind}) sampler {used:.0f}/{total:.0f} MiB, "
                      f"nvidia-smi {s_used:.0f}/{s_total:.0f} MiB, diff {100 * diff:.2f} % "
                      f"of total; per process {dict(sample.gpu_procs)}")
    return worst, procs


async def main(gib: float) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(gib)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    samples = []
    sampler = Sampler("gpu-node", LocalHost(), sys.executable, 0.5, samples.append,
                      time.monotonic)
    worst = 0.0
    try:
        await sampler.start()
        await sampler.watch(holder.pid, "torch-holder", 1)
        worst, _procs = await against_smi(samples)
    finally:
        await sampler.stop()
        holder.kill()
    if not any(s.gpus for s in samples):
        print(f"no GPU readings from the sampler (its stderr: {sampler.errors.strip()!r})")
        sys.exit(1)
    print(f"NVML via the sampler against nvidia-smi: largest difference {100 * worst:.2f} % "
          f"of total memory (target <= 1 %)")


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0))
