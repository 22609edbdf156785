"""Model push throughput: `rpctui models push` against `scp` (and `rsync` where installed)
of the same file.

One namespace node as the main node; a file of random bytes (SIZE_MIB, default 1024) on this
machine as job.model_source. Each round removes the node's copy, then times scp, rsync, rpctui's
direct TCP stream (transport "tcp") and rpctui over SFTP (transport "ssh"), rotated; prints
the medians in MB/s and each against scp. rpctui's figure is the whole command: connect,
hash check on the node, send, and the node hashing the copy (the local hash is cached).

    .venv/bin/python bench/model_push.py [ROUNDS] [SIZE_MIB]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import rpctui  # noqa: E402 - after the sys.path line above
from tests.rig import Rig, node_toml  # noqa: E402 - after the sys.path line above


def profile(rig: Rig, source: Path, dest: str, transport: str) -> str:
    node = rig.nodes[0]
    return "\n".join([
        f'name = "push-{transport}"', f'transport = "{transport}"', "",
        node_toml(rig, node, name="n1", main=True, bin_dir="/nonexistent", servers=[]),
        f'[job]\nmodel = "{dest}"\nmodel_source = "{source}"\n'])


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    size_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    work = Path(tempfile.mkdtemp(prefix="rpctui-push-"))
    source = work / "model.gguf"
    with source.open("wb") as fh:
        for _ in range(size_mib):
            fh.write(os.urandom(1 << 20))
    rig = Rig(1, prefix="pb", net=226).up()
    node = rig.nodes[0]
    dest = str(work / "node" / "model.gguf")
    rates: dict[str, list[float]] = {"scp": [], "rpctui tcp": [], "rpctui sftp": []}
    if shutil.which("rsync"):
        rates["rsync"] = []
    ssh = ["-i", str(rig.client_key), "-o", f"UserKnownHostsFile={rig.known_hosts}"]
    try:
        for transport in ("tcp", "ssh"):
            (work / f"{transport}.toml").write_text(profile(rig, source, dest, transport))
        rpctui(work, "models", "push", str(work / "tcp.toml"))  # hashes the source once
        for _ in range(rounds):
            for name in rates:
                for leftover in (dest, dest + ".sha256"):
                    Path(leftover).unlink(missing_ok=True)
                Path(dest).parent.mkdir(parents=True, exist_ok=True)
                start = time.monotonic()
                if name == "scp":
                    subprocess.run(["scp", "-q", *ssh, str(source), f"root@{node.address}:{dest}"],
                                   check=True)
                elif name == "rsync":  # its -e is a command line: the paths here have no spaces
                    subprocess.run(["rsync", "-q", "-e", " ".join(["ssh", *ssh]), str(source),
                                    f"root@{node.address}:{dest}"], check=True)
                else:
                    toml = work / ("tcp.toml" if name.endswith("tcp") else "ssh.toml")
                    rpctui(work, "models", "push", str(toml), timeout=600).check_returncode()
                took = time.monotonic() - start
                rates[name].append(source.stat().st_size / took / 1e6)
        scp = statistics.median(rates["scp"])
        print(f"model push, {size_mib} MiB of random bytes to one namespace node, {rounds} "
              f"rounds (MB/s, medians)")
        for name, values in rates.items():
            print(f"  {name:12s} {statistics.median(values):7.1f} MB/s  "
                  f"{statistics.median(values) / scp:.2f}x scp")
    finally:
        rig.down()
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
