"""`rpctui build PROFILE` on one node against four: one build, then copies.

Namespace nodes, each with its own empty build_dir (nothing built there yet), mainline for
the CPU, this machine's ccache shared (as a node's own ccache would be on its second build).
Times the whole command for a 1-node and a 4-node profile, alternately, ROUNDS times, and
prints the medians and their ratio (four nodes are one class here: one builds, three get a
copy).

    .venv/bin/python bench/node_build.py [ROUNDS]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import rpctui  # noqa: E402 - after the sys.path line above
from tests.rig import Rig  # noqa: E402 - after the sys.path line above
from tests.test_provision import build_profile  # noqa: E402 - after the sys.path line above


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    rig = Rig(4, prefix="nb", net=228).up()
    times: dict[int, list[float]] = {1: [], 4: []}
    try:
        for _ in range(rounds):
            for count in (1, 4):
                work = Path(tempfile.mkdtemp(prefix="rpctui-nodebuild-"))
                profile = build_profile(rig, work / "p.toml", "/nonexistent.gguf", {},
                                        count=count)
                start = time.monotonic()
                rpctui(work, "build", str(profile), timeout=3600).check_returncode()
                times[count].append(time.monotonic() - start)
                shutil.rmtree(work, ignore_errors=True)
        one, four = (statistics.median(times[n]) for n in (1, 4))
        print(f"rpctui build, mainline for the CPU, {rounds} rounds: 1 node {one:.1f} s, "
              f"4 nodes {four:.1f} s, 4/1 = {four / one:.2f}")
    finally:
        rig.down()


if __name__ == "__main__":
    main()
