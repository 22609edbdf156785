# rpctui cache-fill agent: sent to a server's node over SSH, run by its python3 (stdlib only).
# Fills an rpc-server's tensor cache (-c) from a copy of the model on the same node, so that
# a client's first load sends 8-byte hashes instead of weights. It speaks llama.cpp's RPC to
# the server over the node's own loopback, as a client would: HELLO, one scratch buffer as big
# as the largest tensor, then one SET_TENSOR per tensor the client will send this server (the
# planner's list, each above the 10 MiB threshold below which llama.cpp never uses the cache).
# The server itself hashes the data (FNV-1a) and writes the cache file, so the file names are
# exactly the server's own. Which file each tensor became is kept in rpctui-fill.json in the
# cache folder (a file whose mtime moved during that tensor's SET_TENSOR); a tensor already
# there is skipped. Before filling, the folder is pruned to CONFIG["limit"] bytes, oldest first.
# Wire formats, from the pinned sources: protocol 7 (current mainline: HELLO carries 24 bytes of
# connection caps, SET_TENSOR a cache flag, FREE_BUFFER no reply) and 2/3 (b6110, ik_llama.cpp:
# an empty HELLO, no flag, an empty reply to FREE_BUFFER; b6110 allocates without a device).
# After a job, CONFIG["since_ns"] (the node's clock before the job, from a CONFIG["mark"] call,
# which only prints {"now_ns": ...}) asks for the sizes of the files the load wrote: the
# tensors it had to send, where the others were found in the cache.
# CONFIG["look"] (rpctui doctor, no server running) fills nothing: it names the folder the
# server would use, how many of the tensors are there, and the free disk for the rest.
# CONFIG is prepended by the sender. Prints JSON lines: {"progress": [done, total]} and a
# last {"filled": ..., "present": ..., ...} or {"error": ...}.
import json
import os
import socket
import struct
import sys
import time

cfg = CONFIG  # noqa: F821 - the sender puts CONFIG before this source
ALLOC, GET_BASE, FREE, SET_TENSOR, HELLO = 0, 3, 4, 6, 14
GGML_TYPE_I8 = 24
MANIFEST = "rpctui-fill.json"


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        part = sock.recv(n - len(out))
        if not part:
            raise ConnectionError("the rpc-server closed the connection")
        out += part
    return bytes(out)


def command(sock, cmd, payload, reply=None):
    """Send one command; with ``reply`` (bytes expected), read the answer."""
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    if reply is None:
        return b""
    size = struct.unpack("<Q", recv_exact(sock, 8))[0]
    if size != reply:
        raise ConnectionError(f"command {cmd}: a {size}-byte answer, {reply} expected")
    return recv_exact(sock, size)


def rpc_tensor(buffer, data, size):
    """An I8 tensor of ``size`` bytes at ``data``. The wire's ne and nb are 32-bit: below
    4 GiB a row; above, rows of under 4 GiB (ne[1] x nb[1] spans it; nb[2] and nb[3] go
    unused with ne[2] = ne[3] = 1 and are sent truncated, as llama.cpp's own client sends a
    tensor of 4 GiB or more)."""
    rows = 1
    while size // rows >= 1 << 32 or size % rows:
        rows += 1
        if rows >= 1 << 16:
            raise ValueError(f"a tensor of {size} bytes has no rows of under 4 GiB")
    width = size // rows
    wrapped = size & 0xFFFFFFFF
    return (struct.pack("<QIQ", 0, GGML_TYPE_I8, buffer)
            + struct.pack("<4I", width, rows, 1, 1)
            + struct.pack("<4I", 1, width, wrapped, wrapped)
            + struct.pack("<I", 0) + bytes(64) + struct.pack("<i", 0)
            + bytes(80) + struct.pack("<QQQ", 0, 0, data)
            + b"rpctui-fill".ljust(64, b"\0") + bytes(4))


def send_file(sock, fh, offset, size):
    """``size`` bytes of the file from ``offset`` onto the socket, by the kernel's sendfile
    under the socket's timeout (a tensor may be larger than this process should hold)."""
    if sock.sendfile(fh, offset, size) != size:
        raise ValueError("the model file ended while a tensor was being sent")


def folder_files(folder):
    out = {}
    with os.scandir(folder) as it:
        for e in it:
            if e.is_file() and e.name != MANIFEST:
                st = e.stat()
                out[e.name] = (st.st_mtime_ns, st.st_size)
    return out


def prune(folder, limit, keep):
    """Remove the oldest files (never those in ``keep``) until the folder is within limit."""
    files = folder_files(folder)
    total = sum(size for _, size in files.values())
    removed = 0
    for name, (_, size) in sorted(files.items(), key=lambda kv: kv[1][0]):
        if total <= limit:
            break
        if name in keep:
            continue
        os.unlink(os.path.join(folder, name))
        total -= size
        removed += size
    return total, removed


def read_manifest(folder):
    try:
        with open(os.path.join(folder, MANIFEST)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def model_key(tensors):
    """The copy the tensors come from, as it is now: another file is another key."""
    st = os.stat(tensors[0][1])
    return f"{os.path.realpath(tensors[0][1])}:{st.st_size}:{st.st_mtime_ns}"


def present_in(known, files, tensors):
    """The tensors whose cache file (as the manifest names it) is there, of their size."""
    return [t for t in tensors if known.get(t[0]) in files and files[known[t[0]]][1] == t[3]]


def default_folder(env):
    """Where an rpc-server with -c keeps its cache, as every pinned flavour's rpc-server.cpp
    picks it: LLAMA_CACHE, else XDG_CACHE_HOME/llama.cpp, else ~/.cache/llama.cpp; then rpc."""
    def get(name):
        return env.get(name) or os.environ.get(name) or ""
    base = get("LLAMA_CACHE")
    if not base:
        home = get("HOME") or os.path.expanduser("~")
        base = os.path.join(get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "llama.cpp")
    return os.path.join(base, "rpc")


def look():
    """Without a server: the folder, the planned weights there, and the room for the rest."""
    folder = cfg["cache_dir"] or default_folder(cfg.get("env") or {})
    tensors = cfg["tensors"]
    files = folder_files(folder) if os.path.isdir(folder) else {}
    have_model = bool(tensors) and os.path.isfile(tensors[0][1])
    known = read_manifest(folder).get(model_key(tensors), {}) if have_model else {}
    present = present_in(known, files, tensors)
    probe = folder
    while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    st = os.statvfs(probe)
    say({"folder": folder, "present": len(present), "model": have_model,
         "need_bytes": sum(t[3] for t in tensors if t not in present),
         "free_bytes": st.f_bavail * st.f_frsize,
         "cache_bytes": sum(size for _, size in files.values())})


def main():
    folder = cfg["cache_dir"]
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, MANIFEST)
    manifest = read_manifest(folder)
    tensors = cfg["tensors"]  # [name, file, offset, size]
    key = model_key(tensors) if tensors else ""
    known = manifest.setdefault(key, {}) if key else {}
    files = folder_files(folder)
    since = cfg.get("since_ns")
    written = sorted(size for mtime, size in files.values() if mtime >= since) if since else []
    present = present_in(known, files, tensors)
    todo = [t for t in tensors if t not in present]
    limit = cfg.get("limit")
    removed = 0
    over = []
    if limit:
        keep = {known[t[0]] for t in present}
        total, removed = prune(folder, max(0, limit - sum(t[3] for t in todo)), keep)
        room, fits = limit - total, []
        for t in todo:  # what does not fit within the limit is not filled (the load sends it)
            (fits if t[3] <= room else over).append(t)
            room -= t[3] if t[3] <= room else 0
        todo = fits
    start = time.monotonic()
    sent = 0
    if todo:
        proto = cfg["protocol"]
        sock = socket.create_connection((cfg["host"], cfg["port"]), timeout=30)
        sock.settimeout(300)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proto >= 7:
            command(sock, HELLO, bytes(24), reply=28)
        else:
            command(sock, HELLO, b"", reply=3)
        biggest = max(t[3] for t in todo)
        alloc = struct.pack("<Q", biggest) if proto == 2 else struct.pack("<IQ", 0, biggest)
        buffer, got = struct.unpack("<QQ", command(sock, ALLOC, alloc, reply=16))
        if not buffer or got < biggest:
            raise MemoryError(f"the server could not allocate {biggest} bytes for a tensor")
        base = struct.unpack("<Q", command(sock, GET_BASE, struct.pack("<Q", buffer), reply=8))[0]
        handles = {}
        for i, (name, file, offset, size) in enumerate(todo):
            fh = handles.get(file) or handles.setdefault(file, open(file, "rb"))
            if os.fstat(fh.fileno()).st_size < offset + size:
                raise ValueError(f"{file} ends before tensor {name}")
            head = rpc_tensor(buffer, base, size)
            head += (b"\x01" if proto >= 7 else b"") + struct.pack("<Q", 0)
            before = time.time_ns()
            sock.sendall(struct.pack("<BQ", SET_TENSOR, len(head) + size) + head)
            send_file(sock, fh, offset, size)
            # the reply to GET_BASE comes after the server has written the cache file
            command(sock, GET_BASE, struct.pack("<Q", buffer), reply=8)
            new = [(n, s) for n, (m, s) in folder_files(folder).items() if m >= before
                   and s == size]
            if len(new) == 1:
                known[name] = new[0][0]
            sent += size
            say({"progress": [i + 1, len(todo)], "bytes": sent})
        command(sock, FREE, struct.pack("<Q", buffer), reply=None if proto >= 7 else 0)
        sock.close()
        for fh in handles.values():
            fh.close()
    if tensors:  # what this fill learnt; a look after a job has nothing to add
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(manifest, fh)
        os.replace(tmp, path)
    total = sum(size for _, size in folder_files(folder).values())
    say({"filled": len(todo), "present": len(present), "bytes": sent,
         "seconds": round(time.monotonic() - start, 3), "cache_bytes": total,
         "pruned_bytes": removed, "unnamed": [t[0] for t in todo if t[0] not in known],
         "over_limit": len(over), "written": written})


try:
    if cfg.get("mark"):
        os.makedirs(cfg["cache_dir"], exist_ok=True)
        say({"now_ns": time.time_ns()})
    elif cfg.get("look"):
        look()
    else:
        main()
except (OSError, ValueError, MemoryError, ConnectionError) as exc:
    say({"error": f"{type(exc).__name__}: {exc}"})
