"""Fan-out: connect + probe + preflight + start servers on 8 nodes against 1 node.

In-process, on the namespace rig: the Orchestrator's prepare() and start_servers() (every
server accepting connections), alternating 1-node and 8-node clusters; teardown is not
timed. Prints the medians and their ratio (target: 8 nodes at most 1.5x one node).

    sudo .venv/bin/python bench/fanout.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.engine.orchestrator import Orchestrator  # noqa: E402 - after the sys.path line above
from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from rpctui.profile.load import load_profile  # noqa: E402 - after the sys.path line above
from tests.conftest import rig_profile  # noqa: E402 - after the sys.path line above
from tests.rig import Rig  # noqa: E402 - after the sys.path line above


async def bring_up(path: Path) -> float:
    orch = Orchestrator(load_profile(path), lambda e: None)
    start = time.perf_counter()
    try:
        assert await orch.prepare(), "preflight failed"
        await orch.start_servers()
        return time.perf_counter() - start
    finally:
        await orch.teardown()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    bin_dir = str(ensure_build("mainline").bin_dir)
    model = str(ensure_model("tiny"))
    rig = Rig(8, prefix="rf", net=206).up()
    work = Path(tempfile.mkdtemp(prefix="rpctui-fanout-"))
    try:
        profiles = {n: rig_profile(rig, work / f"p{n}.toml", bin_dir=bin_dir, model=model,
                                   servers=n) for n in (1, 8)}
        times: dict[int, list[float]] = {1: [], 8: []}
        for _ in range(rounds + 1):  # the first round fills the probe cache and is dropped
            for n, path in profiles.items():
                times[n].append(asyncio.run(bring_up(path)))
                assert not rig.leftovers(), "teardown left processes behind"
        med = {n: statistics.median(v[1:]) for n, v in times.items()}
        print(f"fan-out: connect + probe + preflight + start servers, {rounds} alternating rounds")
        for n in (1, 8):
            print(f"  {n} node{'s' if n > 1 else ' '} median {med[n] * 1000:.0f} ms  (runs: "
                  f"{', '.join(f'{v * 1000:.0f}' for v in times[n][1:])})")
        print(f"  ratio 8 nodes / 1 node = {med[8] / med[1]:.2f}  (target <= 1.5)")
    finally:
        rig.down()


if __name__ == "__main__":
    main()
