# rpctui file agent: sent to a node over SSH, run by its python3 (standard library only).
# Copies of the model on the nodes, by CONFIG["role"]:
#   stat:    for each CONFIG["paths"] entry, print one JSON object: whether the file is there, its
#            size, whether its "<path>.sha256" (sha256sum format, written when a copy was
#            verified) is newer than the file and names a hash, the size of an unfinished
#            "<path>.rpctui-part", and the free bytes where the file goes; with CONFIG["hash"],
#            the file's sha256 too (read whole).
#   receive: listen on CONFIG["bind"] (a free port), print {"listening": PORT}; take the first
#            connection that starts with CONFIG["token"] (32 bytes), write what follows into the
#            part file from CONFIG["offset"] on, printing {"got": N} twice a second, until
#            CONFIG["size"] bytes are there; then finish (below).
#   finish:  hash the part file; when it matches CONFIG["sha256"], move it to the path and write
#            the .sha256 beside it; print {"ok": bool, "sha256": ...}. A part file that does not
#            match is removed (the next push sends it all again).
# CONFIG is prepended by the sender.
import hashlib
import hmac
import json
import os
import socket
import sys
import time

cfg = CONFIG  # noqa: F821 - the sender puts CONFIG before this source
CHUNK = 1 << 20


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(8 * CHUNK)
            if not block:
                return h.hexdigest()
            h.update(block)


def free_bytes(path):
    folder = os.path.dirname(os.path.abspath(path)) or "/"
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def stat(path):
    out = {"path": path, "exists": os.path.isfile(path), "free": free_bytes(path)}
    part = path + ".rpctui-part"
    out["part"] = os.path.getsize(part) if os.path.isfile(part) else 0
    if out["exists"]:
        st = os.stat(path)
        out["size"] = st.st_size
        try:
            side = os.stat(path + ".sha256")
            with open(path + ".sha256") as fh:
                words = fh.read(200).split()
            if words and side.st_mtime_ns >= st.st_mtime_ns and len(words[0]) == 64:
                out["recorded"] = words[0]
        except OSError:
            pass
        if cfg.get("hash"):
            out["sha256"] = sha256_of(path)
    return out


def finish(path, expected, got=None):
    part = path + ".rpctui-part"
    got = got or sha256_of(part)
    ok = hmac.compare_digest(got, expected)
    if ok:
        os.replace(part, path)
        with open(path + ".sha256", "w") as fh:
            fh.write(f"{got}  {os.path.basename(path)}\n")
    else:
        os.unlink(part)
    return {"ok": ok, "sha256": got}


def receive():
    path, offset, size = cfg["path"], cfg["offset"], cfg["size"]
    token = bytes.fromhex(cfg["token"])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    listener = socket.socket()
    listener.bind((cfg["bind"], 0))
    listener.listen(4)
    listener.settimeout(cfg.get("limit_s", 60))
    say({"listening": listener.getsockname()[1]})
    while True:
        conn, _ = listener.accept()  # a timeout ends the agent: the sender gave up
        conn.settimeout(10)
        try:
            first = b""
            while len(first) < len(token):
                more = conn.recv(len(token) - len(first))
                if not more:
                    break
                first += more
        except OSError:
            first = b""
        if hmac.compare_digest(first, token):
            break
        conn.close()  # not the sender: wait for it
    listener.close()
    conn.settimeout(60)
    part = path + ".rpctui-part"
    mode = "r+b" if os.path.exists(part) else "wb"
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    got, told = offset, 0.0
    digest = hashlib.sha256() if offset == 0 else None  # else hashed whole once it is there
    with open(part, mode) as fh:
        fh.truncate(offset)
        fh.seek(offset)
        while got < size:
            n = conn.recv_into(view, min(CHUNK, size - got))
            if not n:
                break
            fh.write(view[:n])
            if digest is not None:
                digest.update(view[:n])
            got += n
            now = time.monotonic()
            if now - told > 0.5:
                say({"got": got})
                told = now
        fh.flush()
        os.fsync(fh.fileno())
    conn.close()
    say({"got": got})
    if got < size:
        say({"ok": False, "error": f"the stream ended after {got} of {size} bytes"})
        return
    say(finish(path, cfg["sha256"], digest.hexdigest() if digest is not None else None))


role = cfg["role"]
if role == "stat":
    for p in cfg["paths"]:
        say(stat(p))
elif role == "finish":
    say(finish(cfg["path"], cfg["sha256"]))
else:
    receive()
