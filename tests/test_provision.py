"""`rpctui models push` on the namespace rig: the model copied to a remote main node once,
skipped when identical, sent again when damaged, resumed when cut short, refused when the disk
is too small, and pushed by a run that asks for it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    needs_namespaces,
    recorded_events,
    rig_profile,
    rpctui,
    rpctui_env,
)
from tests.rig import Rig, node_toml

pytestmark = [pytest.mark.rig, needs_namespaces]


def push_profile(rig: Rig, bins, model: str, tmp_path: Path, dest: Path, extra: str = "",
                 job: str = "") -> Path:
    text = (f'[job]\nmodel = "{dest}"\nmodel_source = "{model}"\nngl = 99\n'
            f"prompt_tokens = [32]\ngen_tokens = [8]\nrepetitions = 1\n{job}")
    return rig_profile(rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=str(dest),
                       servers=2, job=text, extra=extra)


def same(a: Path | str, b: Path | str) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def test_push_sends_once_skips_then_resends_a_damaged_copy(clean_rig: Rig, bins, model,
                                                           tmp_path: Path) -> None:
    dest = tmp_path / "n1" / "models" / "tiny.gguf"
    profile = push_profile(clean_rig, bins, model, tmp_path, dest)
    first = rpctui(tmp_path, "models", "push", str(profile))
    assert first.returncode == 0, first.stderr
    assert f"push n1: {dest} sent" in first.stderr and "(tcp), verified (sha256" in first.stderr
    assert same(model, dest)
    assert (dest.parent / "tiny.gguf.sha256").read_text().endswith("  tiny.gguf\n")

    again = rpctui(tmp_path, "models", "push", str(profile))
    assert again.returncode == 0, again.stderr
    assert f"push n1: {dest} skipped: identical" in again.stderr, again.stderr

    with dest.open("r+b") as fh:  # damaged in place: its mtime moves past the .sha256
        fh.seek(4096)
        fh.write(b"\xff" * 16)
    damaged = rpctui(tmp_path, "models", "push", str(profile))
    assert damaged.returncode == 0, damaged.stderr
    assert "differs from the source or was never verified: sent again" in damaged.stderr
    assert same(model, dest)

    # Damaged with its old mtime put back: only reading it again can tell.
    st = dest.stat()
    with dest.open("r+b") as fh:
        fh.seek(8192)
        fh.write(b"\x00" * 16)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    trusted = rpctui(tmp_path, "models", "push", str(profile))
    assert "skipped: identical (its .sha256 matches" in trusted.stderr, trusted.stderr
    verified = rpctui(tmp_path, "models", "push", str(profile), "--verify")
    assert verified.returncode == 0, verified.stderr
    assert "differs from the source (hash read again): sent again" in verified.stderr
    assert same(model, dest)


def test_push_sends_every_shard_of_a_split_model(clean_rig: Rig, bins,
                                                tmp_path: Path) -> None:
    """A model split in three: push sends each shard (each verified), skips all three the
    second time, sends again only the shard that was damaged, and the run loads the copy."""
    from rpctui.llama.tinymodel import ensure_model
    from rpctui.plan.gguf import shards

    source = Path(ensure_model("tiny-split"))
    dest = tmp_path / "n1" / "models" / source.name
    profile = push_profile(clean_rig, bins, str(source), tmp_path, dest)
    first = rpctui(tmp_path, "models", "push", str(profile))
    assert first.returncode == 0, first.stderr
    pairs = list(zip(shards(source), shards(dest), strict=True))
    assert len(pairs) == 3
    for src, copy in pairs:
        assert f"push n1: {copy} sent" in first.stderr, first.stderr
        assert same(src, copy)
    again = rpctui(tmp_path, "models", "push", str(profile))
    assert again.returncode == 0 and again.stderr.count("skipped: identical") == 3, again.stderr
    middle = pairs[1][1]
    with middle.open("r+b") as fh:
        fh.seek(64)
        fh.write(b"\xff" * 8)
    damaged = rpctui(tmp_path, "models", "push", str(profile))
    assert damaged.returncode == 0, damaged.stderr
    resent = [line for line in damaged.stderr.splitlines() if "differs from the source" in line]
    assert resent and all(str(middle) in line for line in resent), damaged.stderr
    assert damaged.stderr.count("skipped: identical") == 2
    assert all(same(src, copy) for src, copy in pairs)
    run = rpctui(tmp_path, "run", str(profile), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "pp32" in run.stdout


def test_push_resumes_a_cut_copy_and_rejects_a_bad_one(clean_rig: Rig, bins, model,
                                                       tmp_path: Path) -> None:
    dest = tmp_path / "n1" / "tiny.gguf"
    dest.parent.mkdir(parents=True)
    part = Path(str(dest) + ".rpctui-part")
    size = Path(model).stat().st_size
    with open(model, "rb") as src:
        part.write_bytes(src.read(size // 2))
    profile = push_profile(clean_rig, bins, model, tmp_path, dest)
    resumed = rpctui(tmp_path, "models", "push", str(profile))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at {size // 2 / 2**20:.0f} MiB" in resumed.stderr, resumed.stderr
    assert same(model, dest) and not part.exists()

    dest.unlink()
    part.write_bytes(b"\x00" * (size // 2))  # a part file that is not the model's beginning
    bad = rpctui(tmp_path, "models", "push", str(profile))
    assert bad.returncode == 1, bad.stderr
    assert "is not the source's" in bad.stderr and "removed, push again" in bad.stderr
    assert not dest.exists() and not part.exists()
    again = rpctui(tmp_path, "models", "push", str(profile))
    assert again.returncode == 0, again.stderr
    assert same(model, dest)


def test_push_checks_free_disk_first(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    n1 = clean_rig.nodes[0]
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(n1.mounts_argv(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)]),
                   check=True)
    try:
        profile = push_profile(clean_rig, bins, model, tmp_path, small / "tiny.gguf")
        result = rpctui(tmp_path, "models", "push", str(profile))
        left = subprocess.run(n1.mounts_argv(["ls", "-A", str(small)]), capture_output=True,
                              text=True, check=True).stdout.split()
    finally:
        subprocess.run(n1.mounts_argv(["umount", str(small)]), check=True)
    assert result.returncode == 1, result.stderr
    assert "not enough free disk: 0.04 GiB to write, 0.00 GiB free there" in result.stderr, \
        result.stderr
    assert left == []


def test_a_run_pushes_the_model_first_and_push_over_ssh_uses_sftp(clean_rig: Rig, bins,
                                                                     model,
                                                                     tmp_path: Path) -> None:
    """push_model = true: the run copies the model to its main node, then runs on it; with
    push_over = "ssh" the bytes go over SFTP on the SSH connection, never a bare port."""
    dest = tmp_path / "n1" / "tiny.gguf"
    profile = push_profile(clean_rig, bins, model, tmp_path, dest, job="push_model = true\n")
    run = rpctui(tmp_path, "run", str(profile), timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"push n1: {dest} sent" in run.stderr and "tg8:" in run.stderr
    shutil.rmtree(dest.parent)
    ssh_profile = push_profile(clean_rig, bins, model, tmp_path, dest, job='push_over = "ssh"\n')
    pushed = rpctui(tmp_path, "models", "push", str(ssh_profile))
    assert pushed.returncode == 0, pushed.stderr
    assert "(sftp), verified (sha256" in pushed.stderr, pushed.stderr
    assert same(model, dest)


# -- warm tensor caches ---------------------------------------------------------------------


def cache_profile(rig: Rig, bin_dir: str, model: str, path: Path, caches: Path, *,
                  fill: bool, limit_gib: float | None = None, shared: bool = False) -> Path:
    """n1 runs the job; n2 and n3 one server each, with the tensor cache on, each in its own
    folder (LLAMA_CACHE: the rig's nodes share one filesystem); ``shared``: both servers on
    n2 instead (ports 50052 and 50053), in one folder."""
    parts = ['name = "cache"', "",
             node_toml(rig, rig.nodes[0], name="n1", main=True, bin_dir=bin_dir, servers=[])]
    placed = [(1, 50052), (1, 50053)] if shared else [(1, 50052), (2, 50052)]
    servers: dict[int, list[dict[str, object]]] = {}
    for i, port in placed:
        server: dict[str, object] = {"port": port, "threads": 1, "cache": True,
                                     "cache_fill": fill,
                                     "env": {"LLAMA_CACHE": str(caches / f"n{i + 1}")}}
        if limit_gib:
            server["cache_limit_gib"] = limit_gib
        servers.setdefault(i, []).append(server)
    for i, on in servers.items():
        parts.append(node_toml(rig, rig.nodes[i], name=f"n{i + 1}", main=False,
                               bin_dir=bin_dir, servers=on))
    parts.append(f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [32]\n'
                 "gen_tokens = [8]\nrepetitions = 1\n")
    path.write_text("\n".join(parts))
    return path


def loads(tmp_path: Path) -> dict[str, tuple[int, int, float]]:
    """endpoint -> (bytes over the network, the server's model bytes, seconds) of the last
    run's load."""
    return {e["endpoint"]: (e["moved_bytes"], e["expected_bytes"], e["seconds"])
            for e in recorded_events(tmp_path) if e["type"] == "LoadFinished" and e["endpoint"]}


@pytest.mark.parametrize("flavour", ["mainline", "b6110", "ik"])
def test_a_filled_cache_makes_the_first_load_send_hashes(clean_rig: Rig, bins, tmp_path: Path,
                                                         flavour: str) -> None:
    """The same first load twice, each into empty caches: as it is (every weight crosses the
    network), then with cache_fill (the servers' caches filled from the node's copy first).
    Filled, the bytes to each server are near zero (under 2 %): only the tensors under llama.cpp's
    10 MiB threshold still travel. A second filled run finds every tensor there and fills nothing."""
    from rpctui.llama.tinymodel import ensure_model

    wide = str(ensure_model("wide-small"))
    cold = tmp_path / "cold"
    warm = tmp_path / "warm"
    for where, fill in ((cold, False), (warm, True)):
        where.mkdir()
        profile = cache_profile(clean_rig, bins[flavour], wide, where / "p.toml",
                                where / "caches", fill=fill)
        run = rpctui(where, "run", str(profile), timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        (where / "stderr.txt").write_text(run.stderr)
    before, after = loads(cold), loads(warm)
    assert set(before) == set(after) and before  # ik puts this 2-layer model on one server
    for ep, (moved, expected, seconds) in after.items():
        print(f"{flavour} {ep}: {expected / 2**20:.0f} MiB; cold {before[ep][0] / 1e6:.1f} MB "
              f"in {before[ep][2]:.2f} s, filled {moved / 1e6:.3f} MB in {seconds:.2f} s")
        if expected:
            assert before[ep][0] >= 0.9 * expected
            # what still travels: the tensors under the threshold (norms), the hashes, and
            # b6110's graph messages of the load window (2.2 MB of 170 MB there)
            assert moved < 0.02 * expected, (ep, moved, expected)
    filled = [e for e in recorded_events(warm) if e["type"] == "CacheFilled"]
    assert sum(e["filled"] for e in filled) == sum(e["tensors"] for e in filled) > 0
    # what each load found in the caches: cold nothing (every weight written), filled all
    cold_used = {ep: e for e in recorded_events(cold) if e["type"] == "CacheUsed"
                 for ep in e["endpoints"]}
    warm_used = {ep: e for e in recorded_events(warm) if e["type"] == "CacheUsed"
                 for ep in e["endpoints"]}
    assert set(cold_used) == set(warm_used) == {e["endpoint"] for e in filled}
    sending = [ep for ep, e in cold_used.items() if e["weights"]]  # ik: one server holds all
    assert sending
    for ep in sending:
        e, w = cold_used[ep], warm_used[ep]
        assert e["found"] == 0 and e["written"] >= e["weights"], e
        assert w["found"] == w["weights"] == e["weights"], w
        assert w["written"] == 0 or flavour != "mainline", w  # b6110, ik: activations too
        assert f"cache {ep} on " in (cold / "stderr.txt").read_text()
        assert f"the load found 0 of {e['weights']} weights there (0 %)" in \
            (cold / "stderr.txt").read_text()
    again = rpctui(warm, "run", str(warm / "p.toml"), timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    refills = [e for e in recorded_events(warm) if e["type"] == "CacheFilled"]
    assert [e["filled"] for e in refills] == [0, 0]
    assert [e["present"] for e in refills] == [e["tensors"] for e in refills]
    assert "weights there (100 %)" in again.stderr, again.stderr[-3000:]
    assert clean_rig.leftovers() == {}


def test_servers_sharing_a_cache_folder_are_filled_and_reported_together(
        clean_rig: Rig, bins, tmp_path: Path) -> None:
    """Two cache_fill servers on one node with one cache folder (as two servers on a node have
    by default): filled one after the other (at once, their fills raced on the folder's
    manifest), and after the job one report for the folder, every weight found there."""
    from rpctui.llama.tinymodel import ensure_model

    wide = str(ensure_model("wide-small"))
    profile = cache_profile(clean_rig, bins["mainline"], wide, tmp_path / "p.toml",
                            tmp_path / "caches", fill=True, shared=True)
    run = rpctui(tmp_path, "run", str(profile), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    events = recorded_events(tmp_path)
    filled = [e for e in events if e["type"] == "CacheFilled"]
    assert len(filled) == 2 and sum(e["filled"] for e in filled) > 0
    used = [e for e in events if e["type"] == "CacheUsed"]
    address = clean_rig.nodes[1].address
    assert [e["endpoints"] for e in used] == [[f"{address}:50052", f"{address}:50053"]], used
    assert used[0]["found"] == used[0]["weights"] > 0 and used[0]["written"] == 0, used
    assert f"cache {address}:50052, {address}:50053 on n2: the load found " in run.stderr


def test_doctor_finds_caches_unfilled_or_short_of_disk_and_fills_them(clean_rig: Rig, bins,
                                                                       tmp_path: Path) -> None:
    """Two cache_fill servers, their caches empty: doctor names each folder as its rpc-server
    would pick it (LLAMA_CACHE/rpc), 0 of its weights there, not filled (fixable); --fix starts
    the servers, fills them from the nodes' copies, stops them, and doctor then finds every
    weight there. A cache on a disk too small for the server's share is named with the free
    disk, before anything is written."""
    from rpctui.llama.tinymodel import ensure_model

    wide = str(ensure_model("wide-small"))
    caches = tmp_path / "caches"
    profile = cache_profile(clean_rig, bins["mainline"], wide, tmp_path / "p.toml", caches,
                            fill=True)
    n2, n3 = (f"{clean_rig.nodes[i].address}:50052" for i in (1, 2))
    first = rpctui(tmp_path, "doctor", str(profile))
    assert first.returncode == 3, first.stderr[-3000:]
    assert (f"FAIL cache      n2       {n2}: 0 of 14 weights in {caches / 'n2' / 'rpc'} "
            "(0 MiB cached, ") in first.stderr, first.stderr[-3000:]
    assert f"FAIL cache      n3       {n3}: 0 of 1 weights in" in first.stderr
    assert "fix: rpctui doctor --fix fills it now" in first.stderr
    fixed = rpctui(tmp_path, "doctor", str(profile), "--fix", timeout=300)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert "doctor --fix: filling the tensor caches" in fixed.stderr
    assert f"cache {n2} on n2: 0 of 14 tensors were there, 14 filled" in fixed.stderr
    assert f"ok   cache      n2       {n2}: 14 of 14 weights in" in fixed.stderr
    assert f"ok   cache      n3       {n3}: 1 of 1 weights in" in fixed.stderr
    assert "doctor: all well" in fixed.stderr
    assert clean_rig.leftovers() == {}
    sshd = clean_rig.nodes[1].sshd
    if os.geteuid() != 0 or not clean_rig.namespaces or sshd is None:
        return  # the small disk is a tmpfs mounted where n2's sshd (and so its agents) run
    small = tmp_path / "small"
    (small / "n2").mkdir(parents=True)
    inside = ["nsenter", "-t", str(sshd.pid), "-m", "--"]
    subprocess.run([*inside, "mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs",
                    str(small / "n2")], check=True)
    try:
        tight = cache_profile(clean_rig, bins["mainline"], wide, tmp_path / "tight.toml", small,
                              fill=True)
        short = rpctui(tmp_path, "doctor", str(tight))
    finally:
        subprocess.run([*inside, "umount", str(small / "n2")], check=True)
    assert short.returncode == 3, short.stderr[-3000:]
    assert (f"FAIL cache      n2       {n2}: the model's weights need 0.16 GiB more in "
            f"{small / 'n2' / 'rpc'}, 0.06 GiB free") in short.stderr, short.stderr[-3000:]
    assert "fix: free disk there, set cache_limit_gib for this server" in short.stderr


def test_the_cache_is_kept_within_its_limit(clean_rig: Rig, bins, tmp_path: Path) -> None:
    """cache_limit_gib: old files are pruned first (oldest first), and what still would not
    fit is left for the load to send; the folder never passes the limit."""
    from rpctui.llama.tinymodel import ensure_model

    wide = str(ensure_model("wide-small"))
    caches = tmp_path / "caches"
    old = caches / "n2" / "rpc"
    old.mkdir(parents=True)
    for i in range(3):  # 3 x 32 MiB of an earlier model's tensors, old
        junk = old / f"{i:016x}"
        junk.write_bytes(b"\1" * (32 << 20))
        os.utime(junk, (1_000_000 + i, 1_000_000 + i))
    limit = 0.1  # GiB: n2's share of the model (162 MiB) does not fit
    profile = cache_profile(clean_rig, bins["mainline"], wide, tmp_path / "p.toml", caches,
                            fill=True, limit_gib=limit)
    run = rpctui(tmp_path, "run", str(profile), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    n2, after = [e for e in recorded_events(tmp_path) if e["type"] == "CacheFilled"
                 and e["node"] == "n2"]
    assert n2["pruned_bytes"] == 3 * (32 << 20)
    assert 0 < n2["filled"] < n2["tensors"]
    assert "left out to stay within cache_limit_gib = 0.1" in n2["message"]
    assert n2["cache_bytes"] <= limit * 2**30
    # The load cached what the fill left out; after the job the folder is pruned back.
    assert after["pruned_bytes"] > 0 and after["cache_bytes"] <= limit * 2**30
    size = sum(p.stat().st_size for p in old.iterdir() if p.name != "rpctui-fill.json")
    assert size <= limit * 2**30, size
    assert f"cache {clean_rig.nodes[1].address}:50052 on n2:" in run.stderr


# -- llama.cpp on every node ----------------------------------------------------------------


def build_profile(rig: Rig, path: Path, model: str, builds: dict[int, str],
                  python: str = "/usr/bin/python3", count: int = 3) -> Path:
    """One server per node; node i either builds (build = mainline, its own build_dir) or
    uses the binaries in ``builds[i]`` (a bin_dir)."""
    parts = ['name = "provision"', ""]
    for i, node in enumerate(rig.nodes[:count]):
        text = node_toml(rig, node, name=f"n{i + 1}", main=i == 0, bin_dir="BIN",
                         servers=[{"port": 50052, "threads": 1}])
        where = builds.get(i)
        if where is None or where.startswith("build:"):
            text = text.replace('bin_dir = "BIN"', f'build = "mainline"\nbuild_dir = '
                                f'"{path.parent / "nodes" / f"n{i + 1}"}"')
        else:
            text = text.replace('bin_dir = "BIN"', f'bin_dir = "{where}"')
        # The nodes compile with this machine's ccache: objects its own builds made are hits.
        ccache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ccache"
        text = text.replace('python = "/usr/bin/python3"', f'python = "{python}"\n'
                            f'env = {{ CCACHE_DIR = "{ccache}" }}')
        parts.append(text)
    parts.append(f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [32]\n'
                 "gen_tokens = [8]\nrepetitions = 1\n")
    path.write_text("\n".join(parts))
    return path


# The node's build hits the ccache objects of this machine's own build (both in the C locale):
# about 30 s. A ccache cleared since that build makes it a whole mainline compile (7-15 minutes
# on two cores), past the suite's 300 s default.
@pytest.fixture(scope="module")
def built_everywhere(rig: Rig, model, tmp_path_factory: pytest.TempPathFactory
                     ) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`rpctui build` with build = "mainline" on three nodes, each its own build_dir, none
    built yet: the result and the folder (its profile same.toml, the nodes' build_dirs in
    nodes/). The doctor test starts from a node this build left."""
    where = tmp_path_factory.mktemp("built")
    profile = build_profile(rig, where / "same.toml", model, {})
    return rpctui(where, "build", str(profile), timeout=1800), where


@pytest.mark.timeout(1800)
def test_build_puts_one_llama_cpp_on_every_node(clean_rig: Rig, bins, model, tmp_path: Path,
                                                built_everywhere) -> None:
    """n3 runs seed-era b6110 from its own bin_dir: check refuses the mix. With build =
    "mainline" on every node (each its own build_dir, none built yet), `rpctui build`
    builds on n1 and copies to n2 and n3 (one class: same machine); check then passes, and
    running build again changes nothing."""
    mixed = build_profile(clean_rig, tmp_path / "mixed.toml", model, {0: bins["mainline"],
                                                                        1: bins["mainline"],
                                                                        2: bins["b6110"]})
    refused = rpctui(tmp_path, "check", str(mixed))
    assert refused.returncode == 3 and "n3" in refused.stderr, refused.stderr
    built, where = built_everywhere
    same = where / "same.toml"
    assert built.returncode == 0, built.stderr[-3000:]
    err = built.stderr
    assert "build n1: mainline built in" in err and "build n1: building mainline for cpu: step" in err
    assert "build n2: mainline copied from n1" in err and "build n3: mainline copied from n1" in err
    assert "build 11312 (0c1e570) for cpu, RPC protocol 7.0.0" in err
    for i in (1, 2, 3):
        record = json.loads((where / "nodes" / f"n{i}" / "mainline" / "BUILD.json").read_text())
        assert record["number"] == 11312 and record["backend"] == "cpu"
        assert record["protocol"] == "7.0.0"
    checked = rpctui(where, "check", str(same))
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert checked.stderr.count("mainline build 0c1e570 (11312)") == 3
    again = rpctui(where, "build", str(same))
    assert again.returncode == 0 and again.stderr.count("mainline up to date") == 3, again.stderr


@pytest.mark.timeout(1800)  # as the build test above
def test_an_interrupted_build_resumes(clean_rig: Rig, model, tmp_path: Path) -> None:
    """Ctrl-C while a node compiles: rpctui exits 130 and the node's compilers end with it
    (nothing left running there); the next `rpctui build` does not unpack the sources again
    and ninja goes on with the steps that were left."""
    profile = build_profile(clean_rig, tmp_path / "p.toml", model, {}, count=1)
    proc = subprocess.Popen([sys.executable, "-m", "rpctui.cli.main", "build", str(profile)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=rpctui_env(tmp_path), cwd=ROOT)
    assert proc.stderr is not None
    total = 0
    seen = []
    for line in proc.stderr:
        seen.append(line)
        step = re.search(r"building mainline for cpu: step (\d+)/(\d+)", line)
        if step and int(step.group(1)) < int(step.group(2)):
            total = int(step.group(2))
            break
    assert total, "".join(seen)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen)
    assert clean_rig.leftovers() == {}
    assert not (tmp_path / "nodes" / "n1" / "mainline").exists()
    again = rpctui(tmp_path, "build", str(profile), timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "unpacking the sources" in "".join(seen) and "unpacking" not in again.stderr
    left = [int(n) for n in re.findall(r"for cpu: step \d+/(\d+)", again.stderr)]
    assert left and max(left) < total, (total, again.stderr[-2000:])
    assert "build n1: mainline built in" in again.stderr


def test_build_names_the_packages_a_node_lacks(clean_rig: Rig, model, tmp_path: Path) -> None:
    """A node whose PATH has no cmake, ninja, make or compiler: the build fails naming them and
    the Debian packages that bring them; nothing is built or sent."""
    python = tmp_path / "bare-python"
    python.write_text("#!/bin/sh\nPATH=/nonexistent exec /usr/bin/python3 \"$@\"\n")
    python.chmod(0o755)
    profile = build_profile(clean_rig, tmp_path / "p.toml", model, {}, python=str(python))
    result = rpctui(tmp_path, "build", str(profile))
    assert result.returncode == 1, result.stderr
    assert "node n1 cannot build llama.cpp for cpu: it has no cmake, ninja, c++" in result.stderr
    release = dict(line.split("=", 1) for line in
                   Path("/etc/os-release").read_text().splitlines() if "=" in line)
    name = release.get("PRETTY_NAME", "").strip('"')
    assert f"fix: install them ({name}): sudo apt-get install cmake ninja-build g++" \
        in result.stderr, result.stderr
    assert not (tmp_path / "nodes" / "n1" / "sdist").exists()


def test_rocm_build_names_hip_and_its_libraries(clean_rig: Rig, model, tmp_path: Path) -> None:
    """No ROCm here: a node asked to build for rocm stops before anything is sent, naming what
    llama.cpp's HIP build needs (hipcc, and the hipBLAS and rocBLAS its CMakeLists require) and
    the packages that bring them. (No AMD GPU is in reach: the build itself is not run.)"""
    profile = build_profile(clean_rig, tmp_path / "p.toml", model, {}, count=1)
    profile.write_text(profile.read_text().replace('build = "mainline"',
                                                   'build = "mainline"\nbackend = "rocm"'))
    result = rpctui(tmp_path, "build", str(profile))
    assert result.returncode == 1, result.stderr
    assert "node n1 cannot build llama.cpp for rocm: it has no hipcc, hipblas, rocblas" \
        in result.stderr, result.stderr
    assert "sudo apt-get install hipcc libhipblas-dev librocblas-dev" in result.stderr
    assert not (tmp_path / "nodes" / "n1" / "sdist").exists()


# -- doctor ---------------------------------------------------------------------------------


@pytest.mark.timeout(1800)  # --fix builds on nodes: see the build test above
def test_doctor_finds_what_check_cannot_and_fixes_it(clean_rig: Rig, bins, model,
                                                     tmp_path: Path, built_everywhere) -> None:
    """n2 and n3 build mainline, n2 has it already (the build test's copy) and n3's build_dir
    is empty, and the main node lacks the model copy: doctor names both (with the fix), and
    that n3's port is closed to the main node by a route missing between them (reachable from
    this machine, which is what check sees); --fix copies n2's build to n3 (nothing compiles)
    and pushes, and once the route is back doctor says all is well."""
    dest = tmp_path / "n1" / "tiny.gguf"
    profile = build_profile(clean_rig, tmp_path / "p.toml", model,
                            {0: bins["mainline"]})  # n1 uses the local build; n2, n3 build
    built, where = built_everywhere
    assert built.returncode == 0, built.stderr[-3000:]
    shutil.copytree(where / "nodes" / "n2", tmp_path / "nodes" / "n2", symlinks=True)
    text = profile.read_text().replace(f'model = "{model}"',
                                       f'model = "{dest}"\nmodel_source = "{model}"')
    profile.write_text(text)
    n1, n3 = clean_rig.nodes[0], clean_rig.nodes[2]
    # Between n1 and n3 only: n1 has no route to n3 (this machine still reaches both).
    block = ["ip", "route", "add", "prohibit", f"{n3.address}/32"]
    subprocess.run(n1.exec_argv(block), check=True)
    try:
        first = rpctui(tmp_path, "doctor", str(profile))
        fixed = rpctui(tmp_path, "doctor", str(profile), "--fix", timeout=1800)
    finally:
        subprocess.run(n1.exec_argv(["ip", "route", "del", "prohibit", f"{n3.address}/32"]),
                       check=True)
    assert first.returncode == 3, first.stderr
    err = first.stderr
    assert "no rpc-server or ggml-rpc-server in its mainline build on node n3\n  fix: rpctui " \
           "build PROFILE builds mainline there" in err, err
    assert "FAIL build      n3       mainline for cpu is not built there (the tools are)" in err
    assert "ok   build      n2" in err
    assert "FAIL model copy n1       lacks the model" in err
    assert "fix: rpctui models push PROFILE (or doctor --fix)" in err
    assert f"FAIL reach      n3       {n3.address}:" in err and "not reachable from the main " \
           "node n1" in err, err
    assert f"ok   reach      n2       {clean_rig.nodes[1].address}:" in err
    assert "ok   clock      n1" in err
    assert fixed.returncode == 3, fixed.stderr[-3000:]
    assert "ok   build      n2" in fixed.stderr and "ok   build      n3" in fixed.stderr
    assert "build n3: mainline copied from n2" in fixed.stderr, fixed.stderr[-3000:]
    assert "building mainline" not in fixed.stderr
    assert "ok   model copy n1       has the model (verified)" in fixed.stderr
    assert "FAIL reach      n3" in fixed.stderr
    after = rpctui(tmp_path, "doctor", str(profile))
    assert after.returncode == 0, after.stderr[-3000:]
    assert "doctor: all well" in after.stderr


def test_vulkan_build_names_headers_too_old(clean_rig: Rig, model, tmp_path: Path) -> None:
    """A node asked to build mainline for Vulkan whose Vulkan headers are older than the
    1.3.261 it needs (Debian 12's 1.3.239, which fails to compile ggml-vulkan.cpp: seen here):
    the build stops before sending anything, naming the headers the node has and where newer
    ones come from. Any other version passes the check (then glslc and cmake decide)."""
    from rpctui.llama.build import vulkan_header_version

    have = vulkan_header_version(Path("/usr/include/vulkan/vulkan_core.h"))
    assert have is not None, "scripts/setup installs libvulkan-dev for this test"
    profile = build_profile(clean_rig, tmp_path / "p.toml", model, {}, count=1)
    profile.write_text(profile.read_text().replace('build = "mainline"',
                                                   'build = "mainline"\nbackend = "vulkan"'))
    result = rpctui(tmp_path, "build", str(profile), timeout=1800)
    if have >= (1, 3, 261):
        assert "newer Vulkan headers" not in result.stderr, result.stderr
        return
    assert result.returncode == 1, result.stderr
    assert ("node n1 cannot build llama.cpp for vulkan: it has no newer Vulkan headers"
            in result.stderr), result.stderr
    assert (f"mainline needs Vulkan headers 1.3.261 or newer and the node has "
            f"{'.'.join(map(str, have))}") in result.stderr
    assert not (tmp_path / "nodes" / "n1" / "sdist").exists()
    # the node's env in the profile names newer headers (as LunarG's SDK sets VULKAN_SDK):
    # the node's inspection finds them there, and doctor sees the tools for the build
    newer = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rpctui" / \
        "vulkan-headers-debian13" / "usr"
    assert (newer / "include" / "vulkan" / "vulkan_core.h").is_file()
    text = profile.read_text().replace("env = { ", f'env = {{ VULKAN_SDK = "{newer}", ')
    profile.write_text(text)
    doctor = rpctui(tmp_path, "doctor", str(profile), timeout=600)
    assert "mainline for vulkan is not built there (the tools are)" in doctor.stderr, \
        doctor.stderr[-3000:]
