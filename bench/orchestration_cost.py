"""Orchestration cost: `rpctui run` against a plain bash+ssh script doing the same steps.

On the 4-node namespace rig, alternately: `rpctui run PROFILE` (connect, probe, preflight,
start 4 servers, wait for ports, llama-bench, teardown verified) and bench/baseline_ssh.sh
(ssh-start 4 servers, wait for ports, llama-bench over ssh, ssh-pkill). Prints the median
wall time of each and their ratio (target: at most 1.15).

    sudo .venv/bin/python bench/orchestration_cost.py [PAIRS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from tests.conftest import rig_profile  # noqa: E402 - after the sys.path line above
from tests.rig import Rig  # noqa: E402 - after the sys.path line above

BENCH = {"prompt_tokens": 512, "gen_tokens": 128, "repetitions": 3}


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    bin_dir = str(ensure_build("mainline").bin_dir)
    model = str(ensure_model("tiny"))
    rig = Rig(4, prefix="rb", net=205).up()
    work = Path(tempfile.mkdtemp(prefix="rpctui-bench-"))
    try:
        job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [{BENCH["prompt_tokens"]}]\n'
               f'gen_tokens = [{BENCH["gen_tokens"]}]\nrepetitions = {BENCH["repetitions"]}\n')
        profile = rig_profile(rig, work / "p.toml", bin_dir=bin_dir, model=model, job=job)
        rpctui = [sys.executable, "-m", "rpctui.cli.main", "run", str(profile)]
        bench_args = (f"-ngl 99 -p {BENCH['prompt_tokens']} -n {BENCH['gen_tokens']} "
                      f"-r {BENCH['repetitions']}")
        baseline = [str(ROOT / "bench" / "baseline_ssh.sh"), str(rig.client_key),
                    str(rig.known_hosts), bin_dir, model, bench_args,
                    *(n.address for n in rig.nodes)]
        env = {"XDG_DATA_HOME": str(work / "data"), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
        times: dict[str, list[float]] = {"rpctui": [], "bash+ssh": []}
        for _ in range(pairs + 1):  # the first pair warms caches and is dropped
            for name, argv in (("rpctui", rpctui), ("bash+ssh", baseline)):
                start = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True, cwd=ROOT,
                               env={**env, "HOME": str(Path.home())})
                times[name].append(time.perf_counter() - start)
                assert not rig.leftovers(), "a run left processes behind"
        for name in times:
            times[name] = times[name][1:]
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"orchestration cost, 4 nodes, llama-bench -p 512 -n 128 -r 3 on the tiny model, "
              f"{pairs} alternating pairs")
        for name, values in times.items():
            print(f"  {name:9s} median {med[name]:.3f} s  (runs: "
                  f"{', '.join(f'{v:.3f}' for v in values)})")
        print(f"  ratio rpctui / bash+ssh = {med['rpctui'] / med['bash+ssh']:.3f}  (target <= 1.15)")
    finally:
        rig.down()


if __name__ == "__main__":
    main()
