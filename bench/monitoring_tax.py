"""Monitoring tax: llama-bench token generation with rpctui watching against without.

Four namespace nodes, one CPU rpc-server each, `llama-bench -p 0 -n 128 -r 3` through
`rpctui run`, rotating three setups: the per-token breakdown on (breakdown = true: the
servers' GGML_RPC_DEBUG lines counted on their nodes, llama-bench --progress, readings at
every test's edges), the
default (samplers at 2 Hz), and nothing (sample_interval_s = 0). Prints
the median tg t/s of each and their ratios to nothing (target: at least 0.98), both as the
ratio of the medians and as the median of each round's own ratio.

    .venv/bin/python bench/monitoring_tax.py [PAIRS]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from tests.conftest import rig_profile, rpctui  # noqa: E402 - after the sys.path line above
from tests.rig import Rig  # noqa: E402 - after the sys.path line above


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    bin_dir = str(ensure_build("mainline").bin_dir)
    model = str(ensure_model("tiny"))
    rig = Rig(4, prefix="rm", net=207).up()
    work = Path(tempfile.mkdtemp(prefix="rpctui-tax-"))
    job = f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [0]\ngen_tokens = [128]\nrepetitions = 3\n'
    try:
        setups = (("profiled", "sample_interval_s = 0.5\nbreakdown = true"),
                  ("sampled", "sample_interval_s = 0.5"),
                  ("off", "sample_interval_s = 0"))
        profiles = {label: rig_profile(rig, work / f"{label}.toml", bin_dir=bin_dir, model=model,
                                       job=job, extra=extra) for label, extra in setups}
        tg: dict[str, list[float]] = {label: [] for label, _ in setups}
        for _ in range(pairs):
            for label, path in profiles.items():
                out = rpctui(work, "run", str(path), "--format", "json", timeout=600)
                out.check_returncode()
                rows = json.loads(out.stdout)
                tg[label].append(next(r["avg_ts"] for r in rows if r["test"] == "tg128"))
        med = {k: statistics.median(v) for k, v in tg.items()}
        print(f"monitoring tax: tg128 over 4 nodes, {pairs} rounds of the three setups")
        for label, values in tg.items():
            print(f"  {label:8s} median {med[label]:.1f} t/s  (runs: "
                  f"{', '.join(f'{v:.1f}' for v in values)})")
        for label in ("profiled", "sampled"):
            # Each round's setups ran back to back: the median of the rounds' own ratios
            # cancels the drift between rounds that the medians of the runs keep.
            paired = statistics.median(a / b for a, b in zip(tg[label], tg["off"], strict=True))
            print(f"  ratio {label} / off = {med[label] / med['off']:.3f} (medians), "
                  f"{paired:.3f} (median of the rounds' ratios)  (target >= 0.98)")
    finally:
        rig.down()


if __name__ == "__main__":
    main()
