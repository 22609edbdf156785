"""The machine rpctui runs on, driven with asyncio subprocesses (no SSH)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rpctui.hosts.base import READ_SIZE, ChunkReader, Completed, Host, Spawned, pid_or_exit


class LocalSpawned(Spawned):
    def __init__(self, proc: asyncio.subprocess.Process, reader: ChunkReader) -> None:
        self._proc = proc
        streams = {"stdout": proc.stdout}
        if proc.stderr is not None:
            streams["stderr"] = proc.stderr
        self._pump_streams(reader, {name: functools.partial(stream.read, READ_SIZE)
                                    for name, stream in streams.items() if stream is not None})

    async def wait(self) -> int:
        rc = await self._proc.wait()
        await self._pumped()
        if self._reader.exit_code is not None:
            return self._reader.exit_code
        return rc if rc >= 0 else 128 - rc

    async def close_stdin(self) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()

    async def write(self, data: bytes) -> None:
        if self._proc.stdin is None or self._proc.stdin.is_closing():
            return
        self._proc.stdin.write(data)
        with contextlib.suppress(ConnectionError):
            await self._proc.stdin.drain()


class LocalHost(Host):
    """This machine."""

    is_local = True

    def __init__(self, label: str = "local") -> None:
        self.label = label
        self.hostname = socket.gethostname()

    async def run(self, argv: Sequence[str], input: bytes | None = None,
                  timeout: float | None = 30.0) -> Completed:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return Completed(127, "", f"{argv[0]}: {exc.strerror}")
        try:
            out, err = await asyncio.wait_for(proc.communicate(input), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return Completed(124, "", f"{argv[0]}: timed out after {timeout} s")
        return Completed(proc.returncode if proc.returncode is not None else -1,
                         out.decode(errors="replace"), err.decode(errors="replace"))

    async def spawn(self, argv: Sequence[str], merge_stderr: bool = False,
                    launched: bool = True) -> Spawned:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
            env=os.environ.copy(),
        )
        reader = ChunkReader()
        spawned = LocalSpawned(proc, reader)
        if not launched:
            spawned.pgid = proc.pid
            return spawned
        await pid_or_exit(reader, proc.wait())
        spawned.pgid = reader.pgid
        return spawned

    async def open_stream(self, host: str, port: int) -> tuple[Any, Any]:
        return await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)

    async def send_file(self, local: Path, remote: str, offset: int,
                        progress: Callable[[int], None]) -> None:
        await asyncio.to_thread(_copy_from, local, Path(remote), offset, progress)

    async def port_open(self, host: str, port: int) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
        except (OSError, TimeoutError):
            return False
        # A port in the ephemeral range (50052 is) can be reached by a connection to itself
        # when nothing listens yet: that is not the server, and it holds the port.
        itself = writer.get_extra_info("sockname") == writer.get_extra_info("peername")
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return not itself

    async def close(self) -> None:
        return None


def _copy_from(local: Path, remote: Path, offset: int, progress: Callable[[int], None]) -> None:
    remote.parent.mkdir(parents=True, exist_ok=True)
    with local.open("rb") as src, remote.open("r+b" if remote.exists() else "wb") as dst:
        dst.truncate(offset)
        src.seek(offset)
        dst.seek(offset)
        done = offset
        while block := src.read(8 << 20):
            dst.write(block)
            done += len(block)
            progress(done)
