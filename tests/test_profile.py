"""Profile loading: strict validation with file:line:key messages, comment-keeping saves."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from rpctui.profile.load import (
    ProfileError,
    load_document,
    load_profile,
    parse_profile,
    save_document,
    set_value,
)
from rpctui.profile.schema import Job
from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))

GOOD = """\
# a comment at the top
name = "two"   # trailing comment

[[nodes]]
name = "a"
host = "local"
main = true

[[nodes.servers]]
port = 50052

[[nodes]]
name = "b"
host = "10.0.0.2"

[[nodes.servers]]
port = 50052
bind = "10.0.0.2"

[job]
model = "/m.gguf"
tensor_split = [1, 1]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ProfileError) as info:
        parse_profile(text, "p.toml")
    return str(info.value).splitlines()


def test_examples_exist_and_validate() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"loopback.toml", "strix-halo-4x-vulkan.toml", "strix-halo-4x-rocm.toml",
            "moe-experts-on-remote-cpu.toml"} <= names
    for path in EXAMPLES:
        profile = load_profile(path)
        assert profile.nodes and profile.job.model


def test_rocm_example_turns_mmap_off_and_moe_example_places_experts() -> None:
    rocm = load_profile(ROOT / "examples" / "strix-halo-4x-rocm.toml")
    assert rocm.job.mmap is False
    moe = load_profile(ROOT / "examples" / "moe-experts-on-remote-cpu.toml")
    assert [r.server for r in moe.job.override_tensors] == ["ram1:50052", "ram2:50052"]
    assert all(s.cache and s.threads == 16 for _, s in moe.servers())


def test_good_profile_loads() -> None:
    p = parse_profile(GOOD)
    assert [n.label for n in p.nodes] == ["a", "b"]
    assert p.main_node.label == "a"
    assert [s.port for _, s in p.servers()] == [50052, 50052]


def test_unknown_key_has_line_and_did_you_mean() -> None:
    lines = problems(GOOD.replace('port = 50052\n\n[[nodes]]', 'prot = 50052\n\n[[nodes]]', 1))
    assert lines[0].startswith("p.toml:10: nodes[0].servers[0].prot: unknown key "
                               "(did you mean 'port'?)")


def test_wrong_type_and_range() -> None:
    lines = problems(GOOD.replace('main = true', 'main = "yes"').replace(
        'port = 50052\nbind', 'port = 99999\nbind'))
    assert "p.toml:7: nodes[0].main: must be true or false, not 'yes'" in lines
    assert "p.toml:17: nodes[1].servers[0].port: must be a TCP port, 1 to 65535" in lines


def test_duplicate_ports_on_one_node() -> None:
    text = GOOD.replace("[[nodes]]\nname = \"b\"", "[[nodes.servers]]\nport = 50052\n\n"
                        "[[nodes]]\nname = \"b\"")
    lines = problems(text)
    assert lines[0] == ("p.toml:13: nodes[0].servers[1].port: port 50052 on a is already used "
                        "by nodes[0].servers[0]; give each server its own port")
    # Every problem is reported at once: the third server also makes the split too short.
    assert lines[1].startswith("p.toml:25: job.tensor_split: has 2 entries but the servers have 3")


def test_two_main_nodes() -> None:
    lines = problems(GOOD.replace('host = "10.0.0.2"', 'host = "10.0.0.2"\nmain = true'))
    assert lines == ["p.toml:15: nodes[1].main: two main nodes (a and b); set main = true on "
                     "one only"]


def test_split_with_wrong_number_of_entries() -> None:
    lines = problems(GOOD.replace("tensor_split = [1, 1]", "tensor_split = [1]"))
    assert lines == ["p.toml:22: job.tensor_split: has 1 entries but the servers have 2 devices; "
                     "give one fraction per device (servers in profile order, then the main "
                     "node's GPUs)"]


def test_bind_must_be_numeric_and_job_kind_known() -> None:
    lines = problems(GOOD.replace('bind = "10.0.0.2"', 'bind = "localhost"').replace(
        '[job]', '[job]\nkind = "benchmark"'))
    assert any("nodes[1].servers[0].bind: must be a numeric IPv4 address" in x for x in lines)
    assert any("job.kind: must be one of: bench, cli, completion, server" in x for x in lines)


def test_override_must_name_a_server_of_the_profile() -> None:
    lines = problems(GOOD + "override_tensors = [{ pattern = 'exps', server = \"b:50053\" }]\n")
    assert lines == ["p.toml:23: job.override_tensors[0].server: no server 'b:50053' in this "
                     "profile (did you mean 'b:50052'?); write node:port"]


def test_toml_syntax_error_names_line() -> None:
    lines = problems(GOOD.replace('name = "a"', 'name = "a'))
    assert lines[0].startswith("p.toml:5: not valid TOML")


def test_missing_job_and_sweep_bounds() -> None:
    text = GOOD.split("[job]")[0] + "[job]\nmodel = '/m'\n[sweep]\nservers = [1, 3]\n"
    assert problems(text) == ["p.toml:23: sweep.servers: asks for 3 servers but the profile "
                              "has 2"]
    assert problems(GOOD.split("[job]")[0]) == ["p.toml:1: job: is required"]


def test_save_keeps_comments_and_order(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    doc = load_document(path)
    set_value(doc, ("job", "tensor_split"), [3, 1])
    set_value(doc, ("nodes", 1, "servers", 0, "threads"), 4)
    save_document(doc, path)
    text = path.read_text()
    assert text.startswith("# a comment at the top\nname = \"two\"   # trailing comment\n")
    assert "tensor_split = [3, 1]" in text
    assert text.index('name = "a"') < text.index('name = "b"') < text.index("threads = 4")
    assert load_profile(path).job.tensor_split == [3.0, 1.0]


def test_save_refuses_an_invalid_document(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    doc = load_document(path)
    set_value(doc, ("nodes", 0, "servers", 0, "port"), 0)
    with pytest.raises(ProfileError):
        save_document(doc, path)
    assert path.read_text() == GOOD


def test_cli_reports_profile_errors_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("port = 50052", "port = 'x'", 1))
    for command in ("validate", "check", "run"):
        result = subprocess.run([sys.executable, "-m", "rpctui.cli.main", command, str(path)],
                                capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{path}:10: nodes[0].servers[0].port: must be an integer, not 'x'" in result.stderr
        assert "Traceback" not in result.stderr


def test_cli_missing_profile_file(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "rpctui.cli.main", "run", str(tmp_path / "no.toml")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "cannot read profile" in result.stderr and "Traceback" not in result.stderr


def test_sweep_grid_and_variants_resolve_into_checked_setups() -> None:
    base = GOOD.split("[job]")[0] + "[job]\nmodel = '/m'\n"
    grid = parse_profile(base + "[sweep]\nservers = [0, 2]\n[sweep.job]\nbatch_size = [256, 512]\n"
                         "flash_attn = [true, false]\n[sweep.server]\ncache = [false, true]\n")
    assert grid.sweep is not None
    names = [s.name for s in grid.sweep.steps]
    assert len(names) == 8 and names[0] == "batch_size=256 flash_attn=on server.cache=off"
    assert names[4] == "batch_size=256 flash_attn=on server.cache=on"  # server settings outermost
    assert grid.sweep.steps[-1].job.batch_size == 512 and grid.sweep.steps[-1].servers == {
        "cache": True}
    plan = grid.sweep_plan()
    assert len(plan) == 16 and [n for n, _ in plan[:4]] == [0, 2, 0, 2]
    assert plan[0][1] is plan[1][1]  # server counts inside each setup: restarts only on change
    named = parse_profile(base + "[[sweep.variants]]\nname = 'even'\njob = { tensor_split = "
                          "[1, 1] }\n[[sweep.variants]]\nname = 'n2 heavy'\njob = { tensor_split"
                          " = [1, 3] }\nservers = { threads = 2 }\n")
    assert named.sweep is not None
    assert [(s.name, s.job.tensor_split, s.servers) for s in named.sweep.steps] == [
        ("even", [1.0, 1.0], {}), ("n2 heavy", [1.0, 3.0], {"threads": 2})]
    assert [n for n, _ in named.sweep_plan()] == [2, 2]


def test_sweep_settings_are_checked_like_the_profile() -> None:
    base = GOOD.split("[job]")[0] + "[job]\nmodel = '/m'\n[sweep]\n"
    assert problems(base + "[sweep.job]\nbatch_sise = [1]\n") == [
        "p.toml:24: sweep.job.batch_sise: unknown key (did you mean 'batch_size'?); known keys: "
        + ", ".join(f.name for f in dataclasses.fields(Job))]
    assert problems(base + "[sweep.job]\nbatch_size = [0]\n") == [
        "p.toml:24: sweep.job.batch_size: must be greater than 0"]
    assert problems(base + "[sweep.job]\nbatch_size = 512\n") == [
        "p.toml:24: sweep.job.batch_size: must be a list of values to try, e.g. [512, 2048]"]
    assert problems(base + "[sweep.job]\nmodel = ['/a', '/b']\n") == [
        "p.toml:24: sweep.job.model: a sweep cannot change job.model (one per run): make a "
        "profile for each"]
    assert problems(base + "[sweep.server]\nport = [1, 2]\n") == [
        "p.toml:24: sweep.server.port: a sweep cannot change a server's port: the --rpc list "
        "stays the same at every step"]
    split = problems(base + "[[sweep.variants]]\njob = { tensor_split = [1] }\n")
    assert split == ["p.toml:23: sweep.variants[0]: the setup 'tensor_split=1': "
                     "job.tensor_split has 1 entries but the servers have 2 devices; give one "
                     "fraction per device (servers in profile order, then the main node's GPUs)"]
    both = problems(base + "[sweep.job]\nbatch_size = [1]\n[[sweep.variants]]\nname = 'x'\n")
    assert both[0].endswith("sweep.variants: give a grid (sweep.job, sweep.server) or variants, "
                            "not both")
    assert problems(base) == ["p.toml:22: sweep: is empty: give server counts (servers), a grid "
                              "(job, server) or variants"]
