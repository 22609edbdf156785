"""A TCP relay that adds a fixed delay each way: the test rig's stand-in for netem, which this
kernel lacks. ``python -m tests.relay LISTEN_HOST TARGET_HOST DELAY_MS PORT [PORT ...]`` listens
on LISTEN_HOST:PORT for each PORT and forwards to TARGET_HOST:PORT; every chunk read is written
on DELAY_MS later, in order, while reading goes on (so throughput is not capped, only delayed).
Threads and time.sleep, not an event loop: a loop's timers wake up to a millisecond late
(epoll rounds its timeout up), which showed as 0.6 to 1.6 ms more than asked per round trip.
Prints "ready" once listening; exits when its stdin closes."""

from __future__ import annotations

import queue
import socket
import sys
import threading
import time


def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
    chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def send() -> None:
        while True:
            due, data = chunks.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                dst.sendall(data)
            except OSError:
                break
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while data := src.recv(1 << 16):
            chunks.put((time.monotonic() + delay, data))
    except OSError:
        pass
    chunks.put((0.0, b""))
    sender.join()


def _serve(listener: socket.socket, target: tuple[str, int], delay: float) -> None:
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            upstream = socket.create_connection(target)
        except OSError:
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def run(a: socket.socket = client, b: socket.socket = upstream) -> None:
            there = threading.Thread(target=_pipe, args=(a, b, delay), daemon=True)
            there.start()
            _pipe(b, a, delay)
            there.join()
            a.close()
            b.close()

        threading.Thread(target=run, daemon=True).start()


def main(listen: str, target: str, delay_ms: float, ports: list[int]) -> None:
    for port in ports:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((listen, port))
        listener.listen(16)
        threading.Thread(target=_serve, args=(listener, (target, port), delay_ms / 1000.0),
                         daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    host, to, ms, *rest = sys.argv[1:]
    main(host, to, float(ms), [int(p) for p in rest])
