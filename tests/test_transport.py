"""transport = "ssh": the servers bind 127.0.0.1 on their nodes and the main node (this
machine) reaches them through SSH forwards; the unauthenticated port never faces the network."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from pathlib import Path

import pytest

from rpctui.engine.orchestrator import Orchestrator
from rpctui.errors import UserError
from rpctui.profile.load import load_profile, parse_profile
from rpctui.run import events as ev
from tests.conftest import recorded_events, rpctui
from tests.rig import Rig, node_toml


def _profile(rig: Rig, path: Path, bin_dir: str, model: str) -> Path:
    parts = ['name = "ssh"', 'transport = "ssh"', "", "[[nodes]]", 'name = "here"',
             'host = "local"', "main = true", f'bin_dir = "{bin_dir}"', ""]
    for i, node in enumerate(rig.nodes[:2]):
        parts.append(node_toml(rig, node, name=f"n{i + 1}", main=False, bin_dir=bin_dir,
                               servers=[{"port": 50052, "bind": "127.0.0.1", "threads": 1}]))
    parts.append(f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [32]\ngen_tokens = [8]\n'
                 f'repetitions = 1\n')
    path.write_text("\n".join(parts))
    return path


def _connects(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def test_profile_rules_for_the_ssh_transport() -> None:
    """Reached through SSH means bound to 127.0.0.1 there, from a main node that is this
    machine; each node gets its own loopback address here."""
    good = parse_profile('transport = "ssh"\n[[nodes]]\nhost = "local"\nmain = true\n'
                         '[[nodes]]\nhost = "a.lan"\n[[nodes.servers]]\nport = 50052\n'
                         '[[nodes]]\nhost = "b.lan"\ntransport = "tcp"\n[[nodes.servers]]\n'
                         'bind = "0.0.0.0"\n[job]\nmodel = "m.gguf"\n')
    assert [(n.transport, n.tunnel) for n in good.nodes] == [
        ("ssh", ""), ("ssh", "127.77.2.1"), ("tcp", "")]
    for text, says in (
            ('[[nodes]]\nhost = "m.lan"\nmain = true\n[[nodes]]\nhost = "a.lan"\n'
             'transport = "ssh"\n[[nodes.servers]]\nport = 50052\n[job]\nmodel = "m.gguf"\n',
             "the main node m.lan runs elsewhere"),
            ('[[nodes]]\nhost = "local"\nmain = true\n[[nodes]]\nhost = "a.lan"\n'
             'transport = "ssh"\n[[nodes.servers]]\nbind = "10.0.0.2"\n[job]\nmodel = "m"\n',
             "remove bind = '10.0.0.2'"),
            ('transport = "udp"\n[[nodes]]\nhost = "local"\n[job]\nmodel = "m"\n',
             "must be one of: tcp, ssh")):
        with pytest.raises(UserError) as exc:
            parse_profile(text)
        assert says in str(exc.value)


def test_servers_face_only_loopback_and_the_run_goes_through_ssh(clean_rig: Rig, bins, model,
                                                                tmp_path: Path) -> None:
    """Started by the engine: each server's port answers on its node's 127.0.0.1 through the
    forward here, and not at all on the node's network address; after teardown the forwards
    are gone. Then a whole run through them, recorded as transport ssh."""
    profile = load_profile(_profile(clean_rig, tmp_path / "ssh.toml", bins["mainline"], model))
    events: list[ev.Event] = []

    async def go() -> tuple[list[bool], list[bool], list[bool]]:
        orch = Orchestrator(profile, events.append)
        try:
            assert await orch.connect()
            await orch.start()
            tunnels = [_connects(n.tunnel, 50052) for n in profile.nodes[1:]]
            network = [_connects(str(n.host), 50052) for n in profile.nodes[1:]]
        finally:
            await orch.teardown()
        return tunnels, network, [_connects(n.tunnel, 50052) for n in profile.nodes[1:]]

    through_ssh, on_the_network, after = asyncio.run(go())
    assert through_ssh == [True, True] and on_the_network == [False, False]
    assert after == [False, False]
    starting = [e for e in events if isinstance(e, ev.ServerStarting)]
    assert [e.transport for e in starting] == ["ssh", "ssh"]
    assert all(e.argv[e.argv.index("-H") + 1] == "127.0.0.1" for e in starting)

    result = rpctui(tmp_path, "run", str(tmp_path / "ssh.toml"), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert {r["test"] for r in json.loads(result.stdout)} == {"pp32", "tg8"}
    assert "bound to 127.0.0.1 there, reached through SSH" in result.stderr
    job = next(e for e in recorded_events(tmp_path) if e["type"] == "JobStarted")
    assert job["argv"][job["argv"].index("--rpc") + 1] == "127.77.2.1:50052,127.77.3.1:50052"
    with sqlite3.connect(tmp_path / "data" / "rpctui" / "history.sqlite") as conn:
        assert {t for (t,) in conn.execute("SELECT transport FROM servers")} == {"ssh"}
    shown = rpctui(tmp_path, "history", "show", "last").stdout
    assert "transport" in shown and "127.77.2.1:50052  n1    127.0.0.1  ssh" in shown, shown


def test_the_app_and_the_record_show_each_servers_transport() -> None:
    """The fold keeps what ServerStarting says; the node card says "via ssh" for those."""
    from rpctui.run.state import fold_all
    from rpctui.tui.widgets.render import render_node

    state = fold_all([
        ev.NodeConnecting(t=0.0, node="n2", host="a.lan"),
        ev.ServerStarting(t=1.0, node="n2", endpoint="127.77.2.1:50052",
                          argv=("rpc-server", "-H", "127.0.0.1"), transport="ssh"),
        ev.ServerStarting(t=1.0, node="n2", endpoint="10.0.0.2:50053",
                          argv=("rpc-server", "-H", "10.0.0.2")),
    ])
    assert state.servers["127.77.2.1:50052"].transport == "ssh"
    card = render_node(state, "n2").plain
    assert "127.77.2.1:50052 via ssh" in card and "10.0.0.2:50053 via" not in card


def test_check_says_which_hosts_reach_an_exposed_port(clean_rig: Rig, bins, model,
                                                      tmp_path: Path) -> None:
    """Direct TCP with a server bound to its node's network address: check warns and names the
    network (the node's interface, its prefix) every host of which can reach the port."""
    import ipaddress

    from tests.conftest import rig_profile

    if not clean_rig.namespaces:
        pytest.skip("the loopback rig's nodes share lo: no network of their own to name")
    profile = rig_profile(clean_rig, tmp_path / "p.toml", bin_dir=bins["mainline"],
                          model=model, servers=2)
    result = rpctui(tmp_path, "check", str(profile))
    assert result.returncode == 0, result.stderr
    node = clean_rig.nodes[1]
    net = ipaddress.ip_interface(f"{node.address}/24").network
    assert (f"warning: server {node.address}:50052 accepts unauthenticated connections from "
            f"any host that reaches {node.address}: every host on {net} (eth0)") in result.stderr, \
        result.stderr
    assert 'use transport = "ssh"' in result.stderr
