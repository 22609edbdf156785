"""The SSH transport's cost: load time and t/s through SSH forwards against direct TCP.

This machine is the main node (llama-bench runs here); two namespace nodes run one CPU
rpc-server each, reached either straight over the rig's bridge (transport "tcp", each server
bound to its node's address) or through an SSH forward from here to the server's 127.0.0.1
(transport "ssh"). Rotates the two for ROUNDS rounds and prints the medians and their ratios.

    .venv/bin/python bench/ssh_transport.py [ROUNDS]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.history.store import read_run  # noqa: E402 - after the sys.path line above
from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from rpctui.run import events as ev  # noqa: E402 - after the sys.path line above
from tests.conftest import rpctui  # noqa: E402 - after the sys.path line above
from tests.rig import Rig, node_toml  # noqa: E402 - after the sys.path line above


def profile(rig: Rig, bin_dir: str, model: str, transport: str) -> str:
    parts = [f'name = "{transport}"', f'transport = "{transport}"', "", "[[nodes]]",
             'name = "here"', 'host = "local"', "main = true", f'bin_dir = "{bin_dir}"', ""]
    for i, node in enumerate(rig.nodes):
        bind = "127.0.0.1" if transport == "ssh" else node.address
        parts.append(node_toml(rig, node, name=f"n{i + 1}", main=False, bin_dir=bin_dir,
                               servers=[{"port": 50052, "bind": bind, "threads": 1}]))
    parts.append(f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [256]\n'
                 f'gen_tokens = [64]\nrepetitions = 3\n')
    return "\n".join(parts)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    bin_dir = str(ensure_build("mainline").bin_dir)
    model = str(ensure_model("small"))  # 16 layers, 512 wide: a load worth timing
    rig = Rig(2, prefix="rs", net=224).up()
    work = Path(tempfile.mkdtemp(prefix="rpctui-ssh-"))
    figures: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(rounds):
            for transport in ("tcp", "ssh"):
                path = work / f"{transport}.toml"
                path.write_text(profile(rig, bin_dir, model, transport))
                out = rpctui(work, "run", str(path), "--format", "json", timeout=600)
                out.check_returncode()
                rows = json.loads(out.stdout)
                recording = out.stderr.split("run recorded in ")[1].split()[0]
                loads = [e.seconds for e in read_run(recording) if isinstance(e, ev.LoadFinished)
                         and e.endpoint]
                f = figures.setdefault(transport, {"load s": [], "pp256": [], "tg64": []})
                f["load s"].append(max(loads))
                for test in ("pp256", "tg64"):
                    f[test].append(next(r["avg_ts"] for r in rows if r["test"] == test))
        print(f"SSH transport against direct TCP: 2 namespace servers, model 'small', "
              f"{rounds} rounds")
        for key in ("load s", "pp256", "tg64"):
            tcp, ssh = (statistics.median(figures[t][key]) for t in ("tcp", "ssh"))
            unit = "s" if key == "load s" else "t/s"
            print(f"  {key:7s} tcp {tcp:8.2f} {unit}  ssh {ssh:8.2f} {unit}  ssh/tcp {ssh / tcp:.3f}")
    finally:
        rig.down()


if __name__ == "__main__":
    main()
