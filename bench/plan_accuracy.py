"""Planner accuracy: predicted per-device model and KV buffers against what llama.cpp reports.

Runs every configuration of tests/test_plan.py's CONFIGS on a 4-node namespace rig: two
architectures' worth of shapes (untied and tied embeddings), two sizes, default and
explicit splits, 2 and 4 servers, two builds (current mainline, seed-era b6110); for each,
`rpctui plan --json` then `rpctui run`, and compares every RPC device's predicted MiB with
llama.cpp's buffer lines. Prints the worst error (targets: model within 1 % or 1 MiB, the
larger; KV within 1 %).

    .venv/bin/python bench/plan_accuracy.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Bins  # noqa: E402 - after the sys.path line above
from tests.rig import Rig  # noqa: E402 - after the sys.path line above
from tests.test_plan import CONFIGS, predicted_and_actual  # noqa: E402 - after the sys.path line above


def main() -> None:
    rig = Rig(4, prefix="ra", net=208).up()
    worst = {"model": (0.0, ""), "kv": (0.0, "")}
    try:
        for i, config in enumerate(CONFIGS):
            servers, model, split, build, ot, *ngl = config
            work = Path(tempfile.mkdtemp(prefix=f"rpctui-plan{i}-"))
            label = (f"{build} {model} {servers} servers split {split or 'default'}"
                     + (" -ot" if ot else "") + (f" -ngl {ngl[0]}" if ngl else ""))
            for kind, device, predicted, actual in predicted_and_actual(
                    rig, Bins(), work, *config):
                err = abs(predicted - actual)
                rel = err / actual if actual else 0.0
                print(f"  {label:48s} {kind:5s} {device:26s} predicted {predicted:8.2f} "
                      f"llama.cpp {actual:8.2f} MiB")
                if err > worst[kind][0]:
                    worst[kind] = (err, f"{label} {device} ({100 * rel:.2f} %)")
    finally:
        rig.down()
    print(f"{len(CONFIGS)} configurations; worst model-buffer error {worst['model'][0]:.3f} MiB "
          f"({worst['model'][1] or 'none'}); worst KV error {worst['kv'][0]:.3f} MiB "
          f"({worst['kv'][1] or 'none'})")


if __name__ == "__main__":
    main()
