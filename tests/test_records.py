"""Run records: secrets stay out (profile environment values and arguments that look like
secrets never reach recordings, the run database, rpctui's output or the app), the records are
their owner's, and a full disk stops the recording, not the run."""

from __future__ import annotations

import json
import sqlite3
import stat
import sys
from pathlib import Path

from rpctui.history.recorder import Recorder
from rpctui.run import events as ev
from rpctui.run.redact import HIDDEN, redact_argv, redact_text, secret_name, secret_values
from tests.conftest import ROOT, rpctui


def test_secret_flags_and_variables_are_hidden_and_nothing_else() -> None:
    argv = ["llama-server", "--api-key", "sk-1234", "--hf-token=hf_abcd", "-hft", "hf_efgh",
            "--keep", "64", "--override-kv", "tokenizer.ggml.add_bos_token=bool:false",
            "env", "HF_TOKEN=hf_ijkl", "GGML_VK_VISIBLE_DEVICES=0", "--ssl-key-file", "k.pem"]
    assert redact_argv(argv) == (
        "llama-server", "--api-key", HIDDEN, f"--hf-token={HIDDEN}", "-hft", HIDDEN,
        "--keep", "64", "--override-kv", "tokenizer.ggml.add_bos_token=bool:false",
        "env", f"HF_TOKEN={HIDDEN}", "GGML_VK_VISIBLE_DEVICES=0", "--ssl-key-file", HIDDEN)
    assert [secret_name(n) for n in ("AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "PATH")] == [
        True, True, False]
    assert secret_values(argv, {"MY_TOKEN": "t0k3n"}) == [
        "t0k3n", "sk-1234", "hf_abcd", "hf_efgh", "hf_ijkl", "k.pem"]
    assert redact_text("auth with sk-1234 failed", ["sk-1234"]) == f"auth with {HIDDEN} failed"


def test_events_hide_argv_secrets_even_from_an_old_recording(tmp_path: Path) -> None:
    """The events themselves hide them: whatever builds one (the engine, a replay of a
    recording written before this) shows *** and records ***; the files are the owner's."""
    started = ev.from_dict({"type": "JobStarted", "t": 1.0, "node": "n1", "kind": "server",
                            "argv": ["llama-server", "--api-key", "sk-oldrecording"]})
    assert isinstance(started, ev.JobStarted) and started.argv[-1] == HIDDEN
    rec = Recorder("r1", tmp_path / "runs")
    rec.write(ev.ServerStarting(t=0.5, node="n1", endpoint="a:1",
                                argv=("rpc-server", "--password", "pw-567")))
    rec.write(started)
    rec.close()
    text = rec.path.read_text()
    assert "pw-567" not in text and "sk-oldrecording" not in text and HIDDEN in text
    assert stat.S_IMODE(rec.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "runs").stat().st_mode) == 0o700


def test_a_real_run_keeps_the_profiles_secrets(tmp_path: Path, bins, model) -> None:
    """A run with a secret in the node's and the server's environment and in the job's
    arguments (llama-bench takes --hf-token): none reaches the recording, the database or
    rpctui's output, and all three are readable by their owner only."""
    secrets = ("hf_sekrit_node_111", "sekrit_server_222", "hf_sekrit_job_333")
    profile = tmp_path / "secrets.toml"
    profile.write_text(f'''name = "secrets"
[[nodes]]
name = "here"
host = "local"
main = true
bin_dir = "{bins["mainline"]}"
env = {{ HF_TOKEN = "{secrets[0]}" }}

[[nodes.servers]]
port = 50172
bind = "127.0.0.1"
threads = 1
env = {{ MY_SECRET_KEY = "{secrets[1]}" }}

[job]
model = "{model}"
ngl = 99
prompt_tokens = [16]
gen_tokens = [4]
repetitions = 1
extra_args = ["--hf-token", "{secrets[2]}"]
''')
    result = rpctui(tmp_path, "run", str(profile), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = tmp_path / "data" / "rpctui"
    written = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in written) and (data / "history.sqlite") in written
    for p in written:
        content = p.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, (p, secret)
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for secret in secrets:
        assert secret not in result.stdout + result.stderr
    with sqlite3.connect(data / "history.sqlite") as conn:
        (argv,) = conn.execute("SELECT argv FROM steps").fetchone()
    assert f'"--hf-token", "{HIDDEN}"' in argv  # the job was recorded, its secret hidden


def test_a_full_disk_stops_the_recording_not_the_run(tmp_path: Path, bins, model) -> None:
    """The run records' disk fills up mid-run (a 64 KiB tmpfs): the run goes on and succeeds,
    the user is told once, the recording ends at a line boundary or a torn line that a replay
    skips, and no database is half-written."""
    import os
    import subprocess

    import pytest

    from rpctui.history.store import read_run
    from tests.conftest import rpctui_env

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(data)], check=True)
    try:
        profile = tmp_path / "p.toml"
        profile.write_text(f'''sample_interval_s = 0.05

[[nodes]]
name = "here"
host = "local"
main = true
bin_dir = "{bins["mainline"]}"

[[nodes.servers]]
port = 50182
threads = 1

[job]
model = "{model}"
ngl = 99
prompt_tokens = [64]
gen_tokens = [32]
repetitions = 3
''')
        result = subprocess.run([sys.executable, "-m", "rpctui.cli.main", "run", str(profile),
                                 "--format", "json"], capture_output=True, text=True,
                                timeout=300, env=rpctui_env(tmp_path), cwd=ROOT)
        assert result.returncode == 0, result.stderr[-2000:]
        assert {r["test"] for r in json.loads(result.stdout)} == {"pp64", "tg32"}
        assert result.stderr.count("the run's recording stopped at") == 1, result.stderr[-2000:]
        assert "No space left on device" in result.stderr
        assert "the run database was not updated with this partial run" in result.stderr
        recording = next((data / "rpctui" / "runs").glob("*.jsonl"))
        events = read_run(recording)  # readable: at most its torn last line is left out
        assert events and isinstance(events[0], ev.RunStarted)
        assert not (data / "rpctui" / "history.sqlite").exists()
    finally:
        subprocess.run(["umount", str(data)], check=False)
