"""The first load into an empty tensor cache against one filled from the node's own copy.

Three namespace nodes: n1 runs llama-bench, n2 and n3 one rpc-server each with -c, each
cache in its own empty folder per run; the "wide" generated model (830 MB, every weight
matrix above llama.cpp's 10 MiB cache threshold). "cold": the load as it is; "filled":
cache_fill = true (rpctui fills each cache first, over the node's loopback). Prints, per
flavour, the medians of the bytes that reached each server during the load, the load's
seconds, and the fill's seconds.

    .venv/bin/python bench/cache_fill.py [ROUNDS] [FLAVOUR...]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from tests.conftest import recorded_events, rpctui  # noqa: E402 - after the sys.path line above
from tests.rig import Rig  # noqa: E402 - after the sys.path line above
from tests.test_provision import cache_profile, loads  # noqa: E402 - after the sys.path line


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    flavours = sys.argv[2:] or ["mainline", "b6110", "ik"]
    wide = str(ensure_model("wide"))
    rig = Rig(3, prefix="cf", net=227).up()
    try:
        for flavour in flavours:
            bin_dir = str(ensure_build(flavour).bin_dir)
            figures: dict[str, list[float]] = {}
            for r in range(rounds):
                for fill in (False, True):
                    where = Path(tempfile.mkdtemp(prefix=f"rpctui-fill-{r}-"))
                    profile = cache_profile(rig, bin_dir, wide, where / "p.toml",
                                            where / "caches", fill=fill)
                    rpctui(where, "run", str(profile), timeout=600).check_returncode()
                    tag = "filled" if fill else "cold"
                    done = loads(where)
                    figures.setdefault(f"{tag} MB", []).append(
                        sum(m for m, _, _ in done.values()) / 1e6)
                    figures.setdefault(f"{tag} load s", []).append(
                        max(s for _, _, s in done.values()))
                    if fill:
                        fills = [e for e in recorded_events(where) if e["type"] == "CacheFilled"]
                        figures.setdefault("fill s", []).append(max(e["seconds"] for e in fills))
                    model_mb = sum(x for _, x, _ in done.values()) / 1e6
            print(f"{flavour}: servers' share of the model {model_mb:.1f} MB, {rounds} rounds")
            for key, values in figures.items():
                print(f"  {key:14s} {statistics.median(values):9.3f}")
            med = {key: statistics.median(values) for key, values in figures.items()}
            print(f"  bytes filled/cold {med['filled MB'] / med['cold MB']:.4f}  "
                  f"load filled/cold {med['filled load s'] / med['cold load s']:.2f}")
    finally:
        rig.down()


if __name__ == "__main__":
    main()
