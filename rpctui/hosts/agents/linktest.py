# rpctui link-test agent: sent to a node over SSH, run by its python3 (standard library only).
# Two roles, chosen by CONFIG["role"]:
#   serve:  listen where the node's rpc-server listens (its bind address and port; a free port
#           when that one is taken), print "listening PORT", then answer test connections until
#           stdin closes or the time limit passes. Each connection's first byte says what it is:
#           P: echo 8-byte messages (round trips); U: count what arrives until EOF, then send
#           back 16 bytes (bytes, nanoseconds from the first byte to EOF); D: send until the
#           client, having counted for the milliseconds the next 8 bytes give, closes.
#           The client always closes first (a reset, for D), so no TIME_WAIT is left on the
#           server's port, which the rpc-server binds next.
#   client: on the main node, connect to the server agent the way llama.cpp's RPC client does
#           (TCP, TCP_NODELAY), run the three tests and print one JSON object.
# Throughput is measured where the bytes arrive, from the first byte to the last, as iperf3's
# receiver does. CONFIG is prepended by the sender.
import json
import os
import socket
import statistics
import struct
import sys
import threading
import time

cfg = CONFIG  # noqa: F821 - the sender puts CONFIG before this source
CHUNK = 1 << 17


def _nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _recv_exact(sock, n):
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("closed")
        data += part
    return data


def _count(sock, seconds=None):
    """Bytes received until EOF (or for ``seconds`` from the first byte on), and the
    nanoseconds from the first byte to the last."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total, first, last = 0, None, None
    limit = int(seconds * 1e9) if seconds is not None else None
    while True:
        n = sock.recv_into(view)
        if not n:
            break
        now = time.perf_counter_ns()
        if first is None:
            first = now
        last = now
        total += n
        if limit is not None and now - first >= limit:
            break
    return total, (last - first) if first is not None else 0


def _send_for(sock, seconds):
    payload = os.urandom(CHUNK)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)


def _serve_one(conn):
    try:
        _nodelay(conn)
        kind = _recv_exact(conn, 1)
        if kind == b"P":
            while True:
                try:
                    msg = _recv_exact(conn, 8)
                except ConnectionError:
                    break
                conn.sendall(msg)
        elif kind == b"U":
            total, ns = _count(conn)
            conn.sendall(struct.pack("<QQ", total, ns))
            conn.recv(1)  # the client closes first: no TIME_WAIT left on the server's port
        elif kind == b"D":
            (ms,) = struct.unpack("<Q", _recv_exact(conn, 8))
            payload = os.urandom(CHUNK)
            end = time.monotonic() + ms / 1000.0 * 4 + 10
            while time.monotonic() < end:
                conn.sendall(payload)  # until the client has had enough and resets
    except OSError:
        pass
    finally:
        conn.close()


def serve():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    note = ""
    try:
        sock.bind((cfg["bind"], cfg["port"]))
    except OSError as exc:
        note = f"port {cfg['port']} taken ({exc.strerror}): tested on another port"
        sock.bind((cfg["bind"], 0))
    sock.listen(4)
    print(json.dumps({"listening": sock.getsockname()[1], "note": note}), flush=True)

    def watch_stdin():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    sock.settimeout(1.0)
    end = time.monotonic() + cfg.get("limit_s", 120)
    while time.monotonic() < end:
        try:
            conn, _ = sock.accept()
        except socket.timeout:  # noqa: UP041 - an alias of TimeoutError only from Python 3.10; nodes may run older
            continue
        conn.settimeout(cfg.get("limit_s", 120))
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()
    os._exit(0)


def _connect(kind):
    sock = socket.create_connection((cfg["host"], cfg["port"]), timeout=cfg.get("timeout_s", 10))
    _nodelay(sock)
    sock.settimeout(cfg.get("seconds", 1.0) * 4 + 10)
    sock.sendall(kind)
    return sock


def client():
    out = {"host": cfg["host"], "port": cfg["port"]}
    try:
        sock = _connect(b"P")
        rtts = []
        msg = b"rpctui!!"
        for _ in range(cfg.get("pings", 50)):
            start = time.perf_counter_ns()
            sock.sendall(msg)
            _recv_exact(sock, 8)
            rtts.append((time.perf_counter_ns() - start) / 1e6)
        sock.close()
        warm = rtts[2:] or rtts  # the first round trips wake both ends up
        out["rtt_ms"] = statistics.median(warm)
        out["rtt_min_ms"] = min(warm)
        out["rtt_max_ms"] = max(warm)
        out["pings"] = len(rtts)
        seconds = cfg.get("seconds", 1.0)
        if seconds > 0:
            sock = _connect(b"U")
            _send_for(sock, seconds)
            total, ns = struct.unpack("<QQ", _recv_exact(sock, 16))
            sock.close()
            out["to_bytes"], out["to_s"] = total, ns / 1e9
            sock = _connect(b"D" + struct.pack("<Q", int(seconds * 1000)))
            total, ns = _count(sock, seconds)
            sock.close()  # unread data: a reset, and the server stops sending
            out["from_bytes"], out["from_s"] = total, ns / 1e9
    except (OSError, ConnectionError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out), flush=True)


if cfg["role"] == "serve":
    serve()
else:
    client()
