"""`rpctui models push` on the namespace rig: the model copied to a remote main node once,
skipped when identical, sent again when damaged, resumed when cut short, refused when the disk
is too small, and pushed by a run that asks for it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import needs_namespaces, rig_profile, rpctui
from tests.rig import Rig

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
