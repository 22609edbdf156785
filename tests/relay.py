"""A TCP relay that adds a fixed delay each way: the test rig's stand-in for netem, which this
kernel lacks. ``python -m tests.relay LISTEN_HOST TARGET_HOST DELAY_MS PORT [PORT ...]`` listens
on LISTEN_HOST:PORT for each PORT and forwards to TARGET_HOST:PORT; every chunk read is written
on DELAY_MS later, in order, while reading goes on (so throughput is not capped, only delayed).
Prints "ready" once listening; exits when its stdin closes."""

from __future__ import annotations

import asyncio
import socket
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        while data := await reader.read(1 << 16):
            queue.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((0.0, b""))
    try:
        await sender
    except ConnectionError:
        pass


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def main(listen: str, target: str, delay_ms: float, ports: list[int]) -> None:
    delay = delay_ms / 1000.0

    def handler(port: int):  # noqa: ANN202 - a closure per port
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(target, port)
            except OSError:
                writer.close()
                return
            _nodelay(writer)
            _nodelay(up_writer)
            await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay),
                                 return_exceptions=True)
            for w in (writer, up_writer):
                w.close()
        return handle

    servers = [await asyncio.start_server(handler(p), listen, p, reuse_address=True)
               for p in ports]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in servers:
        s.close()


if __name__ == "__main__":
    host, to, ms, *rest = sys.argv[1:]
    asyncio.run(main(host, to, float(ms), [int(p) for p in rest]))
