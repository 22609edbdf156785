"""The headless run in a real terminal (tmux): the live status block, then the final report."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, rig_profile
from tests.rig import Rig

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


def test_live_status_in_a_terminal(clean_rig: Rig, bins, model, tmp_path: Path) -> None:
    job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [512]\ngen_tokens = [128]\n'
           f'repetitions = 10\n')
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"], model=model,
                          servers=2, job=job, extra="sample_interval_s = 0.25")
    sock = str(tmp_path / "tmux.sock")
    # The exit code on the screen says the run has ended (its stdout written): only then is
    # tmux ended (ending it earlier ends rpctui with SIGHUP before it writes its report).
    command = (f"{sys.executable} -m rpctui.cli run {profile} > {tmp_path / 'out.md'}; "
               "echo rpctui-exit=$?; sleep 60")
    subprocess.run(["tmux", "-S", sock, "-f", "/dev/null", "new-session", "-d", "-s", "t",
                    "-x", "150", "-y", "45", "-c", str(ROOT), "-e", "TERM=xterm-256color",
                    "-e", f"XDG_DATA_HOME={tmp_path / 'data'}", command], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "-S", sock, "capture-pane", "-p", "-t", "t"],
                              capture_output=True, text=True).stdout

    try:
        live = final = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "rpctui-exit=" not in final:
            text = screen()
            if "RAM [" in text and "rx " in text and not live:
                live = text
            if "peak memory per node" in text:
                final = text
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
    assert live, "the live status block never showed"
    status = [line for line in live.splitlines() if line.startswith(("n1 ", "n2 "))]
    assert len(status) == 2 and all("RAM [" in line and "/s" in line for line in status), live
    assert "memory distribution" in final and "load time per server" in final
    # The status block is cleared at the end: no status lines left on the final screen.
    assert not [line for line in final.splitlines() if line.startswith("n1 ") and "RAM [" in line]
    assert "rpctui-exit=0" in final, final
    assert "tg128" in (tmp_path / "out.md").read_text()


def test_installed_app_in_a_terminal_runs_the_demo_and_quits_clean(bins, model,
                                                                   tmp_path: Path) -> None:
    """The installed `rpctui` command in tmux: open the demo, start the cluster, run the
    bench, see the results, quit (stopping the servers), and nothing is left running."""
    command = Path(sys.executable).parent / "rpctui"
    assert command.exists(), "rpctui is not installed in this environment"
    sock = str(tmp_path / "tmux.sock")
    subprocess.run(["tmux", "-S", sock, "-f", "/dev/null", "new-session", "-d", "-s", "t",
                    "-x", "150", "-y", "45", "-c", str(ROOT), "-e", "TERM=xterm-256color",
                    "-e", f"XDG_DATA_HOME={tmp_path / 'data'}",
                    "-e", f"XDG_CONFIG_HOME={tmp_path / 'config'}",
                    f"{command} demo; echo EXITED $?; sleep 60"], check=True)

    def screen() -> str:
        return subprocess.run(["tmux", "-S", sock, "capture-pane", "-p", "-t", "t"],
                              capture_output=True, text=True).stdout

    def wait_for(text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = screen()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"never saw {text!r}:\n{screen()}")

    def keys(*k: str) -> None:
        subprocess.run(["tmux", "-S", sock, "send-keys", "-t", "t", *k], check=True)

    try:
        wait_for("Start servers")
        keys("s")
        wait_for("127.0.0.1:50053 ready")
        keys("r")
        keys("l")
        results = wait_for("tg16")
        assert "pp64" in results
        keys("q")
        wait_for("Stop every process rpctui started?")
        keys("y")
        done = wait_for("EXITED 0")
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)
    assert "Traceback" not in done
    left = subprocess.run(["pgrep", "-f", "ggml-rpc-server -H 127.0.0.1 -p 5005[23]"],
                          capture_output=True)
    assert left.returncode == 1, left.stdout
