# rpctui sampler agent: sent to a node over SSH, run by its python3 for the life of a run.
# Standard library only; uses pynvml (NVIDIA), pyamdgpuinfo (AMD) and the amdgpu sysfs files
# where the node has them. Prints one JSON sample per interval on stdout. Reads commands on
# stdin ("watch PGID NAME PORT CACHE_DIR COUNTS_FILE", "unwatch PGID", "oom PID..."); exits when stdin
# closes, which is when rpctui ends the run or the connection drops.
# A reading that is not available is left out (or null), never an exception.
# CONFIG is prepended by the sender.
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time

cfg = CONFIG  # noqa: F821 - the sender puts CONFIG before this source
INTERVAL = float(cfg.get("interval_s", 0.5))
SYSFS = cfg.get("sysfs", "/sys")
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
watched = {}  # pgid -> {"name", "port", "cache", "counts"}
received = {}  # name -> bytes received on its port since watched
sent = {}  # name -> bytes sent (and acknowledged) on its port since watched
conn_last = {}  # (port, peer) -> last (bytes_received, bytes_acked)
busiest = {}  # pgid -> seconds: the busiest thread's CPU time per interval, summed
thread_last = {}  # tid -> cpu seconds at the last sample
marks = []  # "now N" asks pending: the next sample answers them (read after they arrived)
lock = threading.Lock()
out_lock = threading.Lock()
wake = threading.Event()


def emit(obj):
    with out_lock:
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def read_commands():
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        with lock:
            if parts[0] == "watch" and len(parts) >= 4:
                cache = parts[4] if len(parts) > 4 and parts[4] != "-" else None
                counts = parts[5] if len(parts) > 5 and parts[5] != "-" else None
                watched[int(parts[1])] = {"name": parts[2], "port": int(parts[3]), "cache": cache,
                                          "counts": counts}
                received.setdefault(parts[2], 0)
            elif parts[0] == "unwatch" and len(parts) == 2:
                watched.pop(int(parts[1]), None)
        if parts[0] == "oom":
            emit({"oom": kernel_oom([int(p) for p in parts[1:]])})
        elif parts[0] == "now":
            if len(parts) > 1 and parts[1].isdigit():
                with lock:
                    marks.append(int(parts[1]))
            wake.set()
    os._exit(0)


def meminfo():
    vals = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                vals[key] = int(rest.split()[0])
    except OSError:
        return None
    return {"total_kib": vals.get("MemTotal"), "available_kib": vals.get("MemAvailable")}


def netdev():
    out = {}
    try:
        with open("/proc/net/dev") as fh:
            for line in list(fh)[2:]:
                name, _, rest = line.partition(":")
                fields = rest.split()
                out[name.strip()] = [int(fields[0]), int(fields[8])]
    except (OSError, IndexError, ValueError):
        return None
    return out


members = {}  # pgid -> pids seen in it at the last full scan of /proc
scan_state = {"tick": 0, "pgids": ()}
RESCAN_TICKS = 10  # a full /proc scan every 10 samples (or when the watch list changes)


COUNTER = "rpctui-count"  # the counter beside a server (agents/rpccount.py): not the server


def _proc(pid):
    """(pgrp, state, rss KiB, cpu seconds) of one process, or None when it is gone or is
    rpctui's own counter."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/statm") as fh:
            rss_pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    end = stat.rindex(")")
    if stat[stat.find("(") + 1:end] == COUNTER:
        return None
    fields = stat[end + 2:].split()
    return (int(fields[2]), fields[0], rss_pages * PAGE_KIB,
            (int(fields[11]) + int(fields[12])) / TICK)


def groups(pgids):
    """rss (KiB) and cpu seconds of every process in each watched process group."""
    found = {pg: {"rss_kib": 0, "cpu_s": 0.0, "n": 0} for pg in pgids}
    if not pgids:
        return found
    scan_state["tick"] += 1
    if tuple(sorted(pgids)) != scan_state["pgids"] or scan_state["tick"] >= RESCAN_TICKS:
        scan_state["tick"], scan_state["pgids"] = 0, tuple(sorted(pgids))
        members.clear()
        candidates = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    else:
        candidates = [pid for pids in members.values() for pid in pids]
    for pid in candidates:
        info = _proc(pid)
        if info is None or info[0] not in found or info[1] == "Z":
            continue
        members.setdefault(info[0], set()).add(pid)
        g = found[info[0]]
        g["rss_kib"] += info[2]
        g["cpu_s"] += info[3]
        g["n"] += 1
    return found


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_INFO = 2
TCPI_BYTES_ACKED = 120  # offsets in struct tcp_info (Linux >= 4.1): bytes_acked, then
TCPI_BYTES_RECEIVED = 128  # bytes_received


def diag_received(ports):
    """{(port, peer): (bytes_received, bytes_acked)} of established IPv4 TCP sockets on ``ports``, asked of
    the kernel over NETLINK_SOCK_DIAG (what `ss -ti` asks, without starting a process)."""
    import socket
    import struct
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    try:
        req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP,
                          1 << (INET_DIAG_INFO - 1), 0, 1 << 1) + bytes(48)
        sock.sendto(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, 0x301, 1, 0) + req,
                    (0, 0))
        found = {}
        while True:
            data = sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind in (2, 3) or length < 16:  # NLMSG_ERROR, NLMSG_DONE
                    return found
                msg = off + 16
                sport, dport = struct.unpack_from(">HH", data, msg + 4)
                if sport in ports:
                    dst = socket.inet_ntoa(data[msg + 24:msg + 28])
                    attr = msg + 72
                    while attr + 4 <= off + length:
                        alen, atype = struct.unpack_from("=HH", data, attr)
                        if alen < 4:
                            break
                        if atype == INET_DIAG_INFO and alen - 4 >= TCPI_BYTES_RECEIVED + 8:
                            acked, value = struct.unpack_from("=QQ", data,
                                                              attr + 4 + TCPI_BYTES_ACKED)
                            found[(sport, f"{dst}:{dport}")] = (value, acked)
                        attr += (alen + 3) & ~3
                off += (length + 3) & ~3
    finally:
        sock.close()


_SS_BYTES = re.compile(r"bytes_received:(\d+)")
_SS_ACKED = re.compile(r"bytes_acked:(\d+)")


def ss_received(ports):
    """The same from `ss -tin` output, where netlink sock_diag is not allowed."""
    text = subprocess.run(["ss", "-tinH", "state", "established"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, timeout=2).stdout.decode()
    found = {}
    current = None
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            parts = line.split()
            current = None
            if len(parts) >= 4:
                port = parts[-2].rsplit(":", 1)[-1]
                if port.isdigit() and int(port) in ports:
                    current = (int(port), parts[-1])
            continue
        m = _SS_BYTES.search(line)
        if current and m:
            acked = _SS_ACKED.search(line)
            found[current] = (int(m.group(1)), int(acked.group(1)) if acked else 0)
    return found


use_netlink = [True]


def connections(ports):
    """Bytes received on each watched port, from the kernel's per-connection counters."""
    if not ports:
        return True
    try:
        if use_netlink[0]:
            try:
                counters = diag_received(ports)
            except OSError:
                use_netlink[0] = False
                counters = ss_received(ports)
        else:
            counters = ss_received(ports)
    except (OSError, subprocess.TimeoutExpired):
        return False
    for key, (value, acked) in counters.items():
        last, last_acked = conn_last.get(key, (0, 0))
        name = ports[key[0]]
        received[name] = received.get(name, 0) + (value - last if value >= last else value)
        sent[name] = sent.get(name, 0) + (acked - last_acked if acked >= last_acked else acked)
        conn_last[key] = (value, acked)
    return True


def _thread_cpu(pid):
    """{tid: cpu seconds} of one process's threads: from schedstat (nanoseconds) where the
    kernel keeps it, else from stat (clock ticks, 10 ms each)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                out[int(tid)] = int(fh.read().split()[0]) / 1e9
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def busiest_thread(pgids):
    """Per watched group, the busiest thread's CPU time in this interval, added up: how long
    the group computed, as a wall-clock figure (its threads work side by side)."""
    for pg in pgids:
        most = 0.0
        for pid in members.get(pg, ()):
            for tid, cpu in _thread_cpu(pid).items():
                last = thread_last.get(tid)
                thread_last[tid] = cpu
                if last is not None and cpu >= last:
                    most = max(most, cpu - last)
        busiest[pg] = busiest.get(pg, 0.0) + most


COUNTS = struct.Struct("<5q")  # as agents/rpccount.py writes it


def rpc_counts(path):
    """[commands, answered, bytes to, bytes from] from a counter's file, or None: two equal
    reads with an even sequence (the counter was not half-way through writing)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        for _ in range(5):
            a = os.pread(fd, COUNTS.size, 0)
            b = os.pread(fd, COUNTS.size, 0)
            if a == b and len(a) == COUNTS.size and COUNTS.unpack(a)[0] % 2 == 0:
                return list(COUNTS.unpack(a)[1:])
    except OSError:
        pass
    finally:
        os.close(fd)
    return None


def dir_bytes(path):
    total = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    pass
    except OSError:
        return None
    return total


def _read(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _int(path):
    value = _read(path)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def amd_sysfs():
    gpus = []
    root = os.path.join(SYSFS, "class", "drm")
    try:
        cards = sorted(c for c in os.listdir(root) if re.fullmatch(r"card\d+", c))
    except OSError:
        return gpus
    for card in cards:
        dev = os.path.join(root, card, "device")
        vram_total = _int(os.path.join(dev, "mem_info_vram_total"))
        if vram_total is None:
            continue
        name = _read(os.path.join(dev, "product_name")) or f"AMD {card}"
        gpus.append({
            "kind": "amd", "name": name, "index": int(card[4:]),
            "vram_used": _int(os.path.join(dev, "mem_info_vram_used")), "vram_total": vram_total,
            "gtt_used": _int(os.path.join(dev, "mem_info_gtt_used")),
            "gtt_total": _int(os.path.join(dev, "mem_info_gtt_total")),
            "util": _int(os.path.join(dev, "gpu_busy_percent")),
        })
    return gpus


def amd_lib():
    try:
        import pyamdgpuinfo  # noqa: PLC0415 - optional on nodes: imported where present
    except ImportError:
        return None
    gpus = []
    for i in range(pyamdgpuinfo.detect_gpus()):
        try:
            g = pyamdgpuinfo.get_gpu(i)
            gpus.append({"kind": "amd", "name": g.name or f"AMD GPU {i}", "index": i,
                         "vram_used": g.query_vram_usage(), "vram_total": g.memory_info["vram_size"],
                         "gtt_used": g.query_gtt_usage(), "gtt_total": g.memory_info["gtt_size"],
                         "util": round(g.query_load() * 100)})
        except Exception:  # noqa: BLE001 - a reading that fails is absent
            continue
    return gpus


class Nvidia:
    def __init__(self):
        self.ok = False
        try:
            import pynvml  # noqa: PLC0415 - optional on nodes: imported where present
            pynvml.nvmlInit()
            self.nv = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                            for i in range(pynvml.nvmlDeviceGetCount())]
            self.ok = True
        except Exception:  # noqa: BLE001 - no NVML, no NVIDIA readings
            pass

    def memory(self, h):
        nv = self.nv
        try:  # the v2 call reports driver-reserved memory apart, as nvidia-smi does
            m = nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2)
        except Exception:  # noqa: BLE001 - a node's GPU library may raise anything; a reading is skipped
            m = nv.nvmlDeviceGetMemoryInfo(h)
        return m.used, m.total

    def process_memory(self, h):
        """pid -> bytes of this GPU it holds, from both of NVML's lists (a process in both,
        once: the larger figure)."""
        out = {}
        for listing in _process_lists(self.nv):
            try:
                for p in listing(h):
                    if p.usedGpuMemory:
                        out[p.pid] = max(out.get(p.pid, 0), p.usedGpuMemory)
            except Exception:  # noqa: BLE001 - a node's GPU library may raise anything; a list is skipped
                continue
        return out

    def sample(self, pgid_of):
        gpus = []
        for i, h in enumerate(self.handles):
            try:
                used, total = self.memory(h)
                name = self.nv.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else name
                try:
                    util = self.nv.nvmlDeviceGetUtilizationRates(h).gpu
                except Exception:  # noqa: BLE001 - a node's GPU library may raise anything; a reading is skipped
                    util = None
                procs = {}
                for pid, mem in self.process_memory(h).items():
                    pg = pgid_of(pid)
                    if pg is not None:
                        procs[str(pg)] = procs.get(str(pg), 0) + mem
                gpus.append({"kind": "nvidia", "name": name, "index": i, "vram_used": used,
                             "vram_total": total, "util": util, "procs": procs})
            except Exception:  # noqa: BLE001 - a node's GPU library may raise anything; a reading is skipped
                continue
        return gpus


def _process_lists(nv):
    """NVML's per-process lists: CUDA contexts are compute processes; a Vulkan device may
    be listed as a graphics one (nvidia-smi's "G" or "C+G"), even for compute work."""
    return (nv.nvmlDeviceGetComputeRunningProcesses, nv.nvmlDeviceGetGraphicsRunningProcesses)


def pgid_of(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def kernel_oom(pids):
    """Kernel log lines that say the OOM killer killed one of ``pids`` (when readable)."""
    for argv in (["dmesg", "--ctime"], ["journalctl", "-k", "--no-pager", "-n", "400"]):
        try:
            text = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  timeout=5).stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            continue
        lines = [ln for ln in text.splitlines() if "Killed process" in ln and
                 any(f"Killed process {p} " in ln for p in pids)]
        if text:
            return {"readable": True, "lines": lines[-5:]}
    return {"readable": False, "lines": []}


def main():
    try:
        os.setsid()  # its own process group, so rpctui can end it like everything else
    except OSError:
        pass  # already a session leader (sshd ran it directly): same effect
    emit({"pid": os.getpid()})
    threading.Thread(target=read_commands, daemon=True).start()
    nvidia = Nvidia()
    next_tick = time.monotonic()
    while True:
        wake.clear()  # a "now" from here on wakes the next round at once
        with lock:
            snapshot = dict(watched)
            answered = list(marks)
            marks.clear()
        if answered and any(w["counts"] for w in snapshot.values()):
            # A server's command counter reads its pipe every so often: give it the time to
            # count every line written before this request arrived.
            time.sleep(float(cfg.get("counter_settle_s", 0.025)))
        ports = {w["port"]: w["name"] for w in snapshot.values()}
        sample = {"t": round(time.monotonic(), 4), "mem": meminfo(), "net": netdev()}
        procs = groups(list(snapshot))
        if cfg.get("threads"):  # only the breakdown asks: a read per thread of every server
            busiest_thread(list(snapshot))
            for pg in snapshot:
                procs[pg]["busiest_s"] = round(busiest.get(pg, 0.0), 3)
        for pg, w in snapshot.items():
            if w["counts"]:
                counts = rpc_counts(w["counts"])
                if counts is not None:
                    procs[pg]["rpc"] = counts
        sample["procs"] = {w["name"]: procs[pg] for pg, w in snapshot.items()}
        if connections(ports):
            sample["received"] = {w["name"]: received.get(w["name"], 0) for w in snapshot.values()}
            sample["sent"] = {w["name"]: sent.get(w["name"], 0) for w in snapshot.values()}
        sample["cache"] = {w["name"]: dir_bytes(w["cache"]) for w in snapshot.values()
                           if w["cache"]}
        gpus = nvidia.sample(pgid_of) if nvidia.ok else []
        amd = amd_lib()
        gpus += amd if amd is not None else amd_sysfs()
        sample["gpus"] = gpus
        if answered:
            sample["marks"] = answered
        if gpus and snapshot:
            names = {str(pg): w["name"] for pg, w in snapshot.items()}
            for g in gpus:
                g["procs"] = {names[k]: v for k, v in g.get("procs", {}).items() if k in names}
        emit(sample)
        next_tick += INTERVAL
        wake.wait(max(0.0, next_tick - time.monotonic()))  # "now": an extra sample at once
        if next_tick < time.monotonic() - INTERVAL:
            next_tick = time.monotonic()


main()
