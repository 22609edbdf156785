"""The tuner against a hand grid, on the namespace rig: the winner `rpctui tune` finds within a
budget, and the best of the grid a person would write ([sweep] over server counts, micro-batch
and flash attention, every setup with 5 repetitions), each with the time it took.

Three namespace nodes (n1 runs llama-bench, n2 and n3 a CPU server each), the tiny model,
llama-bench -p 32 -n 32.

    .venv/bin/python bench/tune_vs_grid.py [BUDGET_MINUTES]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.history.store import read_run  # noqa: E402 - after the sys.path line above
from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from rpctui.run import events as ev  # noqa: E402 - after the sys.path line above
from tests.rig import Rig  # noqa: E402 - after the sys.path line above
from tests.test_profiler import _profile  # noqa: E402 - after the sys.path line above


def main() -> None:
    budget = sys.argv[1] if len(sys.argv) > 1 else "3"
    bins = str(ensure_build("mainline").bin_dir)
    model = str(ensure_model("tiny"))
    work = Path(tempfile.mkdtemp(prefix="rpctui-tune-"))
    env = {**os.environ, "XDG_DATA_HOME": str(work / "data")}
    rig = Rig(3, prefix="rg", net=220).up()
    try:
        job = f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [32]\ngen_tokens = [32]\n'
        profile = _profile(rig, work / "p.toml", bins, model, {}, servers=[1, 2], job=job)
        start = time.monotonic()
        tuned = subprocess.run([sys.executable, "-m", "rpctui.cli.main", "tune", str(profile),
                                "--budget", budget], capture_output=True, text=True, cwd=ROOT,
                               env=env)
        tune_s = time.monotonic() - start
        print(tuned.stdout)
        runs = sorted((work / "data" / "rpctui" / "runs").glob("*.jsonl"))
        verdict = next(e for e in read_run(runs[-1]) if isinstance(e, ev.TuneFinished))
        winner = next(s for s in verdict.setups if s.name == verdict.winner)

        grid = profile.read_text().replace("[job]", "[sweep]\nservers = [1, 2]\n"
                                           "[sweep.job]\nubatch_size = [128, 512]\n"
                                           "flash_attn = [false, true]\n\n[job]")
        grid = grid.replace("gen_tokens = [32]\n", "gen_tokens = [32]\nrepetitions = 5\n")
        (work / "grid.toml").write_text(grid)
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "rpctui.cli.main", "run",
                              str(work / "grid.toml"), "--format", "json"], capture_output=True,
                             text=True, cwd=ROOT, env=env, check=True)
        grid_s = time.monotonic() - start
        rows = [r for r in json.loads(out.stdout) if r["test"] == "tg32"]
        best = max(rows, key=lambda r: r["avg_ts"])
        print(f"tuner ({budget} min budget): {verdict.winner}: {winner.mean_ts:.1f} ± "
              f"{winner.sd_ts:.1f} t/s over {winner.samples} repetitions, {verdict.margin:+.1%} "
              f"over the profile as written; {len(verdict.setups)} setups benched, "
              f"{verdict.untried} left; {tune_s:.0f} s")
        print(f"hand grid (8 setups x 5 repetitions): best {best['setup']} with "
              f"{best['servers']} servers: {best['avg_ts']:.1f} ± {best['stddev_ts']:.1f} t/s; "
              f"{grid_s:.0f} s")
        print(f"tuner's winner / grid's best = {winner.mean_ts / best['avg_ts']:.3f}; grid "
              f"median {statistics.median(r['avg_ts'] for r in rows):.1f} t/s")
    finally:
        rig.down()


if __name__ == "__main__":
    main()
