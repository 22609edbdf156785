"""A real cluster on one machine: one OpenSSH server per network namespace.

As root, each node is a network namespace ``<prefix>N`` with its own address
(``10.<net>.0.N``), its own interfaces and counters, and its own sshd on port 22,
joined by a bridge in the root namespace. Without root, every node is an sshd
on its own loopback address (127.0.<net>.N) and port, sharing ``lo``.
Used by the tests, the benchmarks and ``python -m tests.rig`` for trying
rpctui by hand.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
TOOL_NAMES = ("rpc-server", "ggml-rpc-server", "llama-bench", "llama-cli", "llama-completion",
              "llama-server")


def is_root() -> bool:
    return os.geteuid() == 0


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


@dataclass
class RigNode:
    index: int
    name: str  #: namespace name (root) or "" (loopback)
    address: str
    ssh_port: int
    sshd: subprocess.Popen[bytes] | None = None
    host_key_pub: str = ""

    def exec_argv(self, argv: list[str]) -> list[str]:
        """argv run inside this node's namespace (as is, in loopback mode)."""
        return ["ip", "netns", "exec", self.name, *argv] if self.name else list(argv)

    def mounts_argv(self, argv: list[str]) -> list[str]:
        """argv run in the mount namespace of the node's sshd, which is what its sessions see
        (`ip netns exec` gives each command a mount namespace of its own)."""
        assert self.sshd is not None
        return ["nsenter", "-t", str(self.sshd.pid), "-m", *argv]


@dataclass
class Rig:
    """``n`` nodes; ``net`` picks the subnet so concurrent rigs do not collide."""

    n: int
    prefix: str = "rt"
    net: int = 201
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rpctui-rig-")))
    namespaces: bool = field(default_factory=is_root)
    nodes: list[RigNode] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    # -- bring up -------------------------------------------------------------------------------

    def up(self) -> Rig:
        self.cleanup_leftovers()
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True) if is_root() else None
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.client_key))
        if self.namespaces:
            _sh("ip", "link", "add", self.bridge, "type", "bridge")
            _sh("ip", "addr", "add", f"10.{self.net}.0.254/24", "dev", self.bridge)
            _sh("ip", "link", "set", self.bridge, "up")
        try:
            for i in range(1, self.n + 1):
                self.nodes.append(self._node(i))
            for node in self.nodes:
                self._wait_listening(node)
        except BaseException:
            self.down()
            raise
        self.known_hosts.write_text("".join(
            f"{self._kh_host(n)} {n.host_key_pub}\n" for n in self.nodes))
        return self

    def _kh_host(self, node: RigNode) -> str:
        return node.address if node.ssh_port == 22 else f"[{node.address}]:{node.ssh_port}"

    def _node(self, i: int) -> RigNode:
        if self.namespaces:
            node = RigNode(i, f"{self.prefix}{i}", f"10.{self.net}.0.{i}", 22)
            self._namespace(node)
        else:
            node = RigNode(i, "", f"127.0.{self.net % 256}.{i}", 22000 + self.net * 10 + i)
        key = self.workdir / f"host_key_{i}"
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        node.host_key_pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        self._sshd(node)
        return node

    def _namespace(self, node: RigNode) -> None:
        """The node's network namespace, its veth into the bridge, its address and route."""
        ns, i = node.name, node.index
        host_if, node_if = f"{self.prefix}v{i}", f"{self.prefix}p{i}"
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if)
        _sh("ip", "link", "set", node_if, "netns", ns)
        _sh("ip", "link", "set", host_if, "master", self.bridge)
        _sh("ip", "link", "set", host_if, "up")
        # The servers listen on 50052 and up, inside Linux's default ephemeral range: a node's
        # own outgoing connections (llama-bench to the other servers, in TIME_WAIT after a
        # load) could hold that local port when the next server binds it. Seen once as
        # "Failed to create server socket" in bench/plan_accuracy.py.
        for cmd in (["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                    ["sysctl", "-qw", "net.ipv4.ip_local_port_range=32768 49999"],
                    ["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "set", node_if, "name", "eth0"],
                    # a fixed address, as a real NIC has: the bridge and its neighbours' ARP
                    # caches stay right when the node is made again (reboot)
                    ["ip", "link", "set", "eth0", "address", f"02:52:{self.net % 256:02x}:00:00:{i:02x}"],
                    ["ip", "addr", "add", f"{node.address}/24", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"],
                    ["ip", "route", "add", "default", "via", f"10.{self.net}.0.254"]):
            _sh("ip", "netns", "exec", ns, *cmd)

    def _sshd(self, node: RigNode) -> None:
        """Start the node's sshd (its host key made already), listening on its address."""
        i = node.index
        config = self.workdir / f"sshd_{i}.conf"
        config.write_text("\n".join([
            f"ListenAddress {node.address}", f"Port {node.ssh_port}",
            f"HostKey {self.workdir / f'host_key_{i}'}", f"PidFile {self.workdir}/sshd_{i}.pid",
            f"AuthorizedKeysFile {self.client_key}.pub", "UsePAM no", "StrictModes no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "AllowTcpForwarding yes",
            "MaxStartups 100:30:200", "MaxSessions 100", "SetEnv SHLVL=1",
            "Subsystem sftp /usr/lib/openssh/sftp-server", "",
        ]))
        log = (self.workdir / f"sshd_{i}.log").open("wb")
        node.sshd = subprocess.Popen(node.exec_argv([SSHD, "-D", "-e", "-f", str(config)]),
                                     stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def _wait_listening(self, node: RigNode, timeout: float = 10.0) -> None:
        log = self.workdir / f"sshd_{node.index}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Server listening on" in log.read_text(errors="replace"):
                return
            if node.sshd and node.sshd.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"sshd for node {node.index} did not start:\n{log.read_text()}")

    # -- faults ---------------------------------------------------------------------------------

    def kill_sshd(self, node: RigNode) -> int:
        """SIGKILL every sshd of the node: its listener and each connection's own process
        (what an OOM killer or a broken upgrade does). Namespaces only. How many were killed."""
        pids = [pid for pid in map(int, _sh("ip", "netns", "pids", node.name).stdout.split())
                if _cmdline(pid).startswith("sshd")]
        for pid in pids:
            _kill(pid)
        if node.sshd:
            node.sshd.wait(timeout=5)
            node.sshd = None
        return len(pids)

    def start_sshd(self, node: RigNode) -> None:
        """The node's sshd again, as it was (same address, port and host key)."""
        self._sshd(node)
        self._wait_listening(node)

    def reboot(self, node: RigNode, down_s: float = 1.0) -> None:
        """What a reboot does to the node: every process in it killed, its namespace and link
        gone for ``down_s``, then made again with the same address, host key and sshd."""
        for pid in _sh("ip", "netns", "pids", node.name, check=False).stdout.split():
            _kill(int(pid))
        if node.sshd:
            node.sshd.wait(timeout=5)
            node.sshd = None
        _sh("ip", "netns", "del", node.name)
        deadline = time.monotonic() + 5
        while f"{self.prefix}v{node.index}:" in _sh("ip", "-o", "link", "show").stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.prefix}v{node.index} outlived its namespace")
            time.sleep(0.02)
        time.sleep(down_s)
        self._namespace(node)
        self.start_sshd(node)

    # -- what runs on a node --------------------------------------------------------------------

    def node_pids(self, node: RigNode) -> list[int]:
        """Processes living in the node (its namespace), sshd's listener excluded."""
        if not self.namespaces:
            return []
        out = _sh("ip", "netns", "pids", node.name, check=False).stdout.split()
        keep = []
        for pid in map(int, out):
            if node.sshd and pid == node.sshd.pid:
                continue
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            state = stat[stat.rindex(")") + 2]
            if state != "Z":
                keep.append(pid)
        return keep

    def leftovers(self, settle_s: float = 5.0) -> dict[str, list[str]]:
        """llama.cpp or launcher processes still alive anywhere in the rig, after settling."""
        deadline = time.monotonic() + settle_s
        while True:
            found: dict[str, list[str]] = {}
            for node in self.nodes:
                for pid in self.node_pids(node):
                    cmd = _cmdline(pid)
                    if cmd and not cmd.startswith("sshd"):
                        found.setdefault(node.address, []).append(f"{pid} {cmd}")
            if not self.namespaces:
                for pid in _pids_matching(TOOL_NAMES):
                    found.setdefault("loopback", []).append(f"{pid} {_cmdline(pid)}")
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    # -- shaping links --------------------------------------------------------------------------

    def shape(self, node: RigNode, rate: str, burst: str = "64kb") -> None:
        """Cap a node's link both ways with tbf (netem is not in this kernel): its own eth0
        (what it sends) and its veth's bridge end (what it receives). ``burst``: what may pass
        at once above the rate (a real link of that speed has next to none)."""
        for argv in (node.exec_argv(["tc", "qdisc", "replace", "dev", "eth0", "root"]),
                     ["tc", "qdisc", "replace", "dev", f"{self.prefix}v{node.index}", "root"]):
            _sh(*argv, "tbf", "rate", rate, "burst", burst, "latency", "100ms")

    def unshape(self, node: RigNode) -> None:
        for argv in (node.exec_argv(["tc", "qdisc", "del", "dev", "eth0", "root"]),
                     ["tc", "qdisc", "del", "dev", f"{self.prefix}v{node.index}", "root"]):
            _sh(*argv, check=False)

    # -- tear down ------------------------------------------------------------------------------

    def down(self) -> None:
        for node in self.nodes:
            if self.namespaces:
                for pid in _sh("ip", "netns", "pids", node.name, check=False).stdout.split():
                    _kill(int(pid))
            if node.sshd:
                _kill(node.sshd.pid)
                try:
                    node.sshd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self.nodes.clear()
        self.cleanup_leftovers()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def cleanup_leftovers(self) -> None:
        """Remove this prefix's namespaces, veths and bridge from an earlier crashed run."""
        if not self.namespaces:
            return
        names = _sh("ip", "netns", "list", check=False).stdout.split("\n")
        for line in names:
            ns = line.split(" ")[0]
            if ns.startswith(self.prefix) and ns[len(self.prefix):].isdigit():
                for pid in _sh("ip", "netns", "pids", ns, check=False).stdout.split():
                    _kill(int(pid))
                _sh("ip", "netns", "del", ns, check=False)
        links = _sh("ip", "-o", "link", "show", check=False).stdout
        for line in links.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(f"{self.prefix}v") or name == self.bridge:
                _sh("ip", "link", "del", name, check=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            links = _sh("ip", "-o", "link", "show", check=False).stdout
            if f" {self.bridge}:" not in links and f" {self.prefix}v" not in links:
                break
            time.sleep(0.02)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _pids_matching(names: tuple[str, ...]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if comm in names and stat[stat.rindex(")") + 2] != "Z":
            found.append(int(entry.name))
    return found


def node_toml(rig: Rig, node: RigNode, *, name: str, main: bool, bin_dir: str,
              servers: list[dict[str, object]], extra: dict[str, object] | None = None) -> str:
    """One [[nodes]] table for a rig node, with its servers; ``extra``: more node settings."""
    lines = ["[[nodes]]", f'name = "{name}"', f'host = "{node.address}"', 'user = "root"',
             f"ssh_port = {node.ssh_port}", f'key = "{rig.client_key}"',
             f'known_hosts = "{rig.known_hosts}"', f'bin_dir = "{bin_dir}"',
             'python = "/usr/bin/python3"', f"main = {'true' if main else 'false'}",
             *(f"{key} = {_toml_value(value)}" for key, value in (extra or {}).items()), ""]
    for server in servers:
        lines.append("[[nodes.servers]]")
        server = {"bind": node.address, **server}
        for key, value in server.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


if __name__ == "__main__":
    import sys

    rig = Rig(int(sys.argv[1]) if len(sys.argv) > 1 else 4, prefix="rh", net=209).up()
    print(f"{len(rig.nodes)} nodes up; key {rig.client_key}; known_hosts {rig.known_hosts}")
    for n in rig.nodes:
        print(f"  ssh -i {rig.client_key} -o UserKnownHostsFile={rig.known_hosts} -p {n.ssh_port} "
              f"root@{n.address}")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        rig.down()
