# rpctui probe agent: sent to a node over SSH and run by its python3 (stdlib only).
# It gathers raw facts (binary paths, --help/--version text, the server's device list
# and banner, free ports, the model file) and prints them as one JSON object. All parsing
# happens in rpctui.llama.caps on the rpctui side, so this file stays small and dumb.
# CONFIG is prepended by the sender as a JSON literal.
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

cfg = CONFIG  # noqa: F821  (defined by the sender)
out = {"hostname": socket.gethostname(), "python": sys.version.split()[0],
       "stdbuf": bool(shutil.which("stdbuf")), "setsid": bool(shutil.which("setsid")),
       "cpu_count": os.cpu_count(), "binaries": {}, "ports": [], "errors": []}


def meminfo():
    vals = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                vals[key] = int(rest.split()[0])
    except OSError:
        pass
    return vals


def tool_env():
    """The environment rpctui starts this node's processes with (the profile's env: e.g.
    GGML_VK_VISIBLE_DEVICES, which decides what devices a Vulkan build lists)."""
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    env.update(cfg.get("env", {}))
    return env


def run(argv, timeout=20):
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, env=tool_env())
        return {"rc": p.returncode, "output": p.stdout.decode("utf-8", "replace")}
    except subprocess.TimeoutExpired as exc:
        return {"rc": 124, "output": (exc.stdout or b"").decode("utf-8", "replace")}
    except OSError as exc:
        return {"rc": 127, "output": str(exc)}


def find(names):
    dirs = [os.path.expanduser(d) for d in cfg["bin_dirs"]]
    for name in names:
        for d in dirs:
            path = os.path.join(d, name)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        if cfg["use_path"]:
            path = shutil.which(name)
            if path:
                return path
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def banner(path):
    """Start the server briefly on a free loopback port and read its start-up banner."""
    port = free_port()
    argv = [path, "-H", "127.0.0.1", "-p", str(port)]
    if out["stdbuf"]:
        argv = ["stdbuf", "-oL", "-eL"] + argv
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, env=tool_env())
    deadline = time.monotonic() + cfg.get("banner_timeout_s", 15)
    text = b""
    os.set_blocking(proc.stdout.fileno(), False)
    connected = False
    while time.monotonic() < deadline:
        try:
            chunk = proc.stdout.read()
        except (BlockingIOError, TypeError):
            chunk = None
        if chunk:
            text += chunk
        if b"Accepted client connection" in text or proc.poll() is not None:
            break
        if not connected:
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=0.2)
                # the banner is flushed once a client connects (not a connection to itself)
                connected = c.getsockname() != c.getpeername()
                c.close()
            except OSError:
                pass
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        rest = proc.communicate(timeout=3)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rest = proc.communicate()[0]
    text += rest or b""
    return {"rc": proc.returncode, "output": text.decode("utf-8", "replace")}


def fingerprint(path):
    """The binary as it was probed: a changed file, or a changed env (devices it lists),
    is probed again."""
    st = os.stat(path)
    env = sorted(cfg.get("env", {}).items())
    return [st.st_size, st.st_mtime_ns, st.st_ino] + ([repr(env)] if env else [])


def probe_tool(role, path):
    """Run what tells about one binary; skip what rpctui already knows for this exact file."""
    info = {"path": path, "fingerprint": fingerprint(path)}
    known = cfg.get("known", {}).get(path) == info["fingerprint"]
    info["cached"] = known
    if not known:
        info["help"] = run([path, "--help"])
    if role != "server":
        if not known:
            info["version"] = run([path, "--version"])
        if role == cfg.get("list_devices_role"):
            supports = cfg.get("list_devices", {}).get(path)
            if supports is None:
                supports = "--list-devices" in info.get("help", {}).get("output", "")
            if supports:
                info["list_devices"] = run([path, "--list-devices"])
    elif not known:
        # Devices and their memory as the build sees them; live memory comes from the sampler.
        info["devices"] = run([path, "-d", "rpctui-no-such-device"])
        if cfg.get("banner"):
            info["banner"] = banner(path)
    return role, info


mem = meminfo()
out["mem_total_kib"] = mem.get("MemTotal")
out["mem_available_kib"] = mem.get("MemAvailable")
found = [(role, find(names)) for role, names in cfg["names"].items()]
found = [(role, path) for role, path in found if path]
slow = [rp for rp in found if cfg.get("known", {}).get(rp[1]) != fingerprint(rp[1])]
if len(slow) > 1:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(slow)) as pool:
        results = list(pool.map(lambda rp: probe_tool(*rp), found))
else:
    results = [probe_tool(*rp) for rp in found]
for role, info in results:
    out["binaries"][role] = info

def _address(field):
    """/proc/net/tcp's "0100007F:C350" as "127.0.0.1" (IPv6 mapped IPv4 too; else as is)."""
    raw = bytes.fromhex(field.rsplit(":", 1)[0])
    if len(raw) == 16 and raw[:8] == bytes(8) and raw[8:12] == b"\xff\xff\x00\x00":
        raw = raw[12:]
    if len(raw) == 4:
        return socket.inet_ntoa(raw[::-1])
    return field.rsplit(":", 1)[0]


def port_owner(port):
    """The process listening on a TCP port, as far as this user may see: its pid, command,
    the clients connected to it and, for a process another rpctui started, that rpctui's
    RPCTUI_OWNER tag; None if unknown."""
    inodes, clients = set(), []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                for line in list(fh)[1:]:
                    f = line.split()
                    if int(f[1].rsplit(":", 1)[1], 16) != port:
                        continue
                    if f[3] == "0A":
                        inodes.add(f[9])
                    elif f[3] == "01":  # established: a client of the listener
                        clients.append(_address(f[2]))
        except (OSError, IndexError, ValueError):
            continue
    wanted = {f"socket:[{i}]" for i in inodes}
    if not wanted:
        return None
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if not any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                command = fh.read().split(b"\0")[0].decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = dict(item.split(b"=", 1) for item in fh.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        tag = env.get(b"RPCTUI_OWNER", b"").decode(errors="replace")
        return {"pid": int(pid), "command": os.path.basename(command), "rpctui": tag,
                "clients": sorted(set(clients))}
    return None


for bind, port in cfg["ports"]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((bind, port))
        out["ports"].append({"bind": bind, "port": port, "free": True})
    except OSError as exc:
        out["ports"].append({"bind": bind, "port": port, "free": False, "error": exc.strerror,
                             "owner": port_owner(port)})
    finally:
        s.close()

def link(peer):
    """The interface traffic to ``peer`` leaves by (the route the kernel picks), with its speed
    (Mb/s, None when the driver does not say: virtual and wireless links) and MTU."""
    import fcntl
    import struct

    try:
        family, _, _, _, addr = socket.getaddrinfo(peer, 9, 0, socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            local = s.getsockname()[0]
    except OSError as exc:
        return {"peer": peer, "error": exc.strerror or str(exc)}
    name = None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, ifname in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", ifname[:15].encode()))
            except OSError:
                continue
            if socket.inet_ntoa(packed[20:24]) == local:
                name = ifname
                break
    if name is None and local.startswith("127."):
        name = "lo"
    info = {"peer": peer, "address": local, "interface": name, "speed_mbps": None, "mtu": None}
    for key, file in (("speed_mbps", "speed"), ("mtu", "mtu")):
        try:
            with open(os.path.join("/sys/class/net", name, file)) as fh:
                value = int(fh.read().strip())
            info[key] = value if value > 0 else None
        except (OSError, ValueError, TypeError):
            pass
    return info


if cfg.get("peer"):
    out["link"] = link(cfg["peer"])


def networks():
    """The node's IPv4 networks: [interface, address, prefix length], from iproute2."""
    try:
        done = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True,
                              text=True, timeout=5)
        return [[i["ifname"], a["local"], a["prefixlen"]] for i in json.loads(done.stdout)
                for a in i.get("addr_info", []) if "local" in a]
    except (OSError, ValueError, KeyError, TypeError, subprocess.SubprocessError):
        return None


if any(bind != "127.0.0.1" for bind, _ in cfg["ports"]):
    out["networks"] = networks()

model = cfg.get("model")
if model:
    path = os.path.expanduser(model)
    info = {"path": path, "exists": os.path.isfile(path)}
    if info["exists"]:
        info["size"] = os.path.getsize(path)
        try:
            with open(path, "rb") as fh:
                info["magic"] = fh.read(4).decode("latin-1")
        except OSError as exc:
            info["error"] = exc.strerror
    out["model"] = info

sys.stdout.write(json.dumps(out))
