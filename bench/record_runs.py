"""Record the real runs the app's tests and benchmarks replay (kept in tests/fixtures).

  rig4-midload-warning.jsonl  4 namespace nodes, the 16-layer model, samples every 0.05 s,
                              headroom set so that only the node with the largest share is
                              predicted to run out (one warning), run with --force.
  rig32-2hz.jsonl             32 namespace nodes, one server each, samplers at 2 Hz, a bench
                              long enough for about 20 s of samples.
  rig4-sweep.jsonl            4 namespace nodes, the tiny model, a sweep over 1, 2, 3 and 4
                              servers (the app's scaling chart, reports' scaling tables).
  rig3-breakdown.jsonl        3 namespace nodes, two servers, n3's link capped at 20 Mb/s
                              with tbf: the link test and the per-token breakdown.

    .venv/bin/python bench/record_runs.py [breakdown]   (breakdown: that recording alone)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from tests.conftest import rig_profile  # noqa: E402 - after the sys.path line above
from tests.rig import Rig  # noqa: E402 - after the sys.path line above

FIX = ROOT / "tests" / "fixtures"


def run(profile: Path, work: Path, *extra: str) -> Path:
    data = work / "data"
    subprocess.run([sys.executable, "-m", "rpctui.cli.main", *extra[:1], str(profile), *extra[1:]],
                   cwd=ROOT, env={**os.environ, "XDG_DATA_HOME": str(data)}, check=False,
                   capture_output=True)
    return sorted((data / "rpctui" / "runs").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)[-1]


def breakdown(bin_dir: str, work: Path) -> None:
    rig = Rig(3, prefix="rb", net=217).up()
    try:
        rig.shape(rig.nodes[2], "20mbit", burst="4kb")
        job = (f'[job]\nmodel = "{ensure_model("tiny")}"\nngl = 99\nprompt_tokens = [64]\n'
               f'gen_tokens = [32]\nrepetitions = 3\n')
        profile = rig_profile(rig, work / "rig3.toml", bin_dir=bin_dir, model="", job=job,
                              servers=3, nodes=3, extra="link_test_s = 1.0\nbreakdown = true")
        text = profile.read_text()
        first = text.index("[[nodes.servers]]")  # n1 runs the job only
        profile.write_text(text[:first] + text[text.index("[[nodes]]", first):])
        shutil.copy(run(profile, work, "run"), FIX / "rig3-breakdown.jsonl")
    finally:
        rig.down()


def main() -> None:
    bin_dir = str(ensure_build("mainline").bin_dir)
    work = Path(tempfile.mkdtemp(prefix="rpctui-rec-"))
    if sys.argv[1:] == ["breakdown"]:
        breakdown(bin_dir, work)
        return
    rig = Rig(4, prefix="rr", net=215).up()
    try:
        model = str(ensure_model("small"))
        job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [128]\ngen_tokens = [32]\n'
               f'repetitions = 3\n')
        profile = rig_profile(rig, work / "rig4.toml", bin_dir=bin_dir, model=model, job=job,
                              extra="sample_interval_s = 0.05")
        # n4's server holds the output layer (the largest share): a budget below it gives
        # exactly one predicted warning, on n4.
        text = profile.read_text()
        n4 = text.index('name = "n4"')
        profile.write_text(text[:n4] + text[n4:].replace("threads = 1",
                                                         "threads = 1\nmemory_mib = 20", 1))
        shutil.copy(run(profile, work, "run", "--force"), FIX / "rig4-midload-warning.jsonl")
    finally:
        rig.down()
    rig = Rig(32, prefix="rs", net=216).up()
    try:
        model = str(ensure_model("tiny"))
        job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [512]\ngen_tokens = [128]\n'
               f'repetitions = 10\n')
        # 32 sampled nodes, 14 of them with a server: llama.cpp's scheduler takes at most 16
        # backends (14 RPC devices, the CPU, and room for one more).
        profile = rig_profile(rig, work / "rig32.toml", bin_dir=bin_dir, model=model, job=job,
                              servers=14, nodes=32, extra="sample_interval_s = 0.5")
        shutil.copy(run(profile, work, "run"), FIX / "rig32-2hz.jsonl")
    finally:
        rig.down()
    rig = Rig(4, prefix="rr", net=207).up()
    try:
        profile = rig_profile(rig, work / "sweep.toml", bin_dir=bin_dir,
                              model=str(ensure_model("tiny")), servers=4,
                              extra="[sweep]\nservers = [1, 2, 3, 4]\n")
        shutil.copy(run(profile, work, "run"), FIX / "rig4-sweep.jsonl")
    finally:
        rig.down()
    for name in ("rig4-midload-warning.jsonl", "rig32-2hz.jsonl", "rig4-sweep.jsonl"):
        path = FIX / name
        kinds: dict[str, int] = {}
        for line in path.read_text().splitlines():
            t = json.loads(line)["type"]
            kinds[t] = kinds.get(t, 0) + 1
        print(name, path.stat().st_size, "bytes", {k: kinds[k] for k in sorted(kinds)
                                                    if k in ("NodeSample", "OomRisk",
                                                             "LoadProgress", "BenchResult")})


if __name__ == "__main__":
    main()
