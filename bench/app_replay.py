"""The app under a 32-node replay at 2 Hz per node: CPU share and key-press latency.

Replays tests/fixtures/rig32-2hz.jsonl (a real run on 32 namespace nodes, samplers at 2 Hz)
at its recorded pace in the app, headless, in-process, twice:
  1. untouched: the app's CPU share of one core (target <= 15 %, issue 10);
  2. with keys posted every 0.5 s, alternating tab (focus the next node card) and l / g
     (switch to the Job / Cluster tab); each is timed from the moment the key is posted until
     the first frame is written that shows its effect (the focus moved, the tab's view on
     screen). Targets: each key's median under 30 ms and its maximum under 100 ms.

    .venv/bin/python bench/app_replay.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402 - after the sys.path line above

from rpctui.tui.app import RpcTuiApp  # noqa: E402 - after the sys.path line above

RUN = ROOT / "tests" / "fixtures" / "rig32-2hz.jsonl"


async def untouched() -> tuple[int, float, float]:
    app = RpcTuiApp(replay=RUN, replay_speed=1.0, record=False)
    async with app.run_test(size=(200, 60)):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while any(w.is_running for w in app.workers):
            await asyncio.sleep(0.2)
        return len(app.state.nodes), time.process_time() - cpu0, time.perf_counter() - wall0


async def with_keys() -> dict[str, list[float]]:
    app = RpcTuiApp(replay=RUN, replay_speed=1.0, record=False)
    timings: dict[str, list[float]] = {"focus next card (tab)": [], "switch to the job tab (l)": [],
                                       "switch to the cluster tab (g)": []}
    waiting: list[tuple[str, float, Callable[[], bool]]] = []

    # A key is timed from the moment it is posted until the first frame written (App._display)
    # after its action ran that shows its effect: the focus moved, or the tab's view on screen.
    display = app._display

    def displayed(screen: Any, renderable: Any) -> None:
        display(screen, renderable)
        if waiting and waiting[0][0] != "posted" and waiting[0][2]():
            label, started, _ = waiting.pop()
            timings[label].append(time.perf_counter() - started)

    app._display = displayed  # type: ignore[method-assign]  # the bench's probe on the frames

    def timed(action: Callable[[], None], label: str, shown: Callable[[], bool]) -> Callable[[], None]:
        def run() -> None:
            action()
            _, started, _ = waiting.pop()
            waiting.append((label, started, shown))
        return run

    app.action_show_log = timed(app.action_show_log, "switch to the job tab (l)",  # type: ignore[method-assign]
                                lambda: app.job_view.is_on_screen)
    app.action_show_cluster = timed(app.action_show_cluster,  # type: ignore[method-assign]
                                    "switch to the cluster tab (g)",
                                    lambda: app.cluster_view.is_on_screen)
    app.action_focus_next = timed(app.action_focus_next,  # type: ignore[method-assign]
                                  "focus next card (tab)", lambda: True)
    async with app.run_test(size=(200, 60)):
        i = 0
        while any(w.is_running for w in app.workers):
            key = "tab" if i % 2 == 0 else "lg"[(i // 2) % 2]
            waiting[:] = [("posted", time.perf_counter(), lambda: False)]
            app.post_message(events.Key(key, None if key == "tab" else key))
            i += 1
            await asyncio.sleep(0.5)
    return timings


def main() -> None:
    nodes, cpu, wall = asyncio.run(untouched())
    print(f"app replaying a {nodes}-node run at 2 Hz per node ({wall:.1f} s)")
    print(f"  CPU {100 * cpu / wall:.1f} % of one core  (target <= 15 %)")
    for label, values in asyncio.run(with_keys()).items():
        print(f"  key to screen, {label}: median {1000 * statistics.median(values):.1f} ms, "
              f"max {1000 * max(values):.1f} ms over {len(values)}  (targets: median < 30 ms, "
              "max < 100 ms)")


if __name__ == "__main__":
    main()
