"""Nodes reached over SSH with asyncssh: one connection per node, host keys verified.

``~/.ssh/config`` and the agent are honoured (asyncssh loads both by default).
argv lists are quoted once, here, with :func:`shlex.join`.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import shlex
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncssh

from rpctui.errors import ExitCode, UserError
from rpctui.hosts.base import (
    READ_SIZE,
    ChunkReader,
    Completed,
    Forward,
    Host,
    Spawned,
    pid_or_exit,
    signal_exit_code,
)
from rpctui.profile.schema import Node


class NodeUnreachable(UserError):
    """A node could not be connected to; the message names it and the fix."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message, fix, ExitCode.PREFLIGHT)


def _where(node: Node) -> str:
    port = f":{node.ssh_port}" if node.ssh_port else ""
    user = f"{node.user}@" if node.user else ""
    return f"{user}{node.host}{port}"


#: A keepalive after a node's keepalive_s quiet seconds (3 by default); KEEPALIVE_MISSES
#: unanswered in a row end the connection, so a node that drops off the network is noticed after
#: (3 + 1) x 3 = 12 s by default (measured on the rig: 12.0 s), not after TCP's minutes.
KEEPALIVE_MISSES = 3

#: SFTP writes: 256 KiB each (OpenSSH's sftp-server takes up to 256 KiB), 32 in flight.
SFTP_BLOCK = 1 << 18
SFTP_REQUESTS = 32


async def connect(node: Node) -> SSHHost:
    """Open the node's connection, turning every failure into a NodeUnreachable."""
    options: dict[str, object] = {
        "connect_timeout": node.connect_timeout_s, "login_timeout": node.connect_timeout_s,
        "keepalive_interval": node.keepalive_s, "keepalive_count_max": KEEPALIVE_MISSES}
    if node.user:
        options["username"] = node.user
    if node.ssh_port:
        options["port"] = node.ssh_port
    where = _where(node)
    for what, path in (("key", node.key), ("known_hosts", node.known_hosts)):
        if path and not Path(path).expanduser().is_file():
            raise NodeUnreachable(f"node {node.label}: {what} file {path} does not exist",
                                  f"fix {what} for this node in the profile")
    if node.key:
        options["client_keys"] = [str(Path(node.key).expanduser())]
    if node.known_hosts:
        options["known_hosts"] = str(Path(node.known_hosts).expanduser())
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(node.host, client_factory=_Watcher, **options),
            node.connect_timeout_s + 5)
    except asyncssh.HostKeyNotVerifiable as exc:
        kh = node.known_hosts or "~/.ssh/known_hosts"
        port = f"-p {node.ssh_port} " if node.ssh_port else ""
        raise NodeUnreachable(
            f"node {node.label}: the host key of {where} is not trusted ({exc.reason})",
            f"if the key is unknown, check its fingerprint and add it: ssh-keyscan {port}"
            f"{node.host} >> {kh}; if it changed, find out why before removing the old line "
            f"(ssh-keygen -R {node.host} -f {kh})",
        ) from None
    except asyncssh.PermissionDenied:
        raise NodeUnreachable(
            f"node {node.label}: {where} refused the login",
            "put your public key in that user's ~/.ssh/authorized_keys, load it into ssh-agent, "
            "or set user/key for this node in the profile",
        ) from None
    except TimeoutError:
        raise NodeUnreachable(
            f"node {node.label}: no answer from {where} within {node.connect_timeout_s:g} s",
            "check that the machine is up and on this network, and host/ssh_port in the profile",
        ) from None
    except (OSError, asyncssh.Error) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise NodeUnreachable(
            f"node {node.label}: cannot connect to {where}: {reason}",
            "check that the machine is up, that sshd runs there, and host/ssh_port in the profile",
        ) from None
    owner = conn.get_owner()  # asyncssh drops it once the connection ends: keep it here
    return SSHHost(node.label, conn, owner if isinstance(owner, _Watcher) else None,
                   node.keepalive_s)


class _Watcher(asyncssh.SSHClient):
    """Keeps why the connection ended: keepalives unanswered, or closed by the node."""

    def __init__(self) -> None:
        self.lost: Exception | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc


def lost_reason(exc: Exception | None, keepalive_s: float) -> str:
    """Why a node's connection ended, in words that point at the cause."""
    text = str(getattr(exc, "reason", "") or exc or "")
    if "keepalive" in text:
        return (f"no answer to SSH keepalives for {keepalive_s * KEEPALIVE_MISSES:g} s "
                "(its link or the machine is down)")
    if isinstance(exc, asyncssh.DisconnectError) and text != "Connection lost":
        return f"its sshd ended the connection ({text})"
    return "its sshd closed the connection (sshd killed or restarted, or the machine rebooting)"


def _text(data: bytes | str) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _reader(stream: asyncssh.SSHReader[bytes]) -> Callable[[], Awaitable[bytes]]:
    """A channel stream read that ends (b"") rather than raises when the connection goes."""
    async def read() -> bytes:
        try:
            return await stream.read(READ_SIZE)
        except (asyncssh.Error, OSError):
            return b""
    return read


class SSHSpawned(Spawned):
    def __init__(self, proc: asyncssh.SSHClientProcess[bytes], reader: ChunkReader, merged: bool) -> None:
        self._proc = proc
        streams = {"stdout": proc.stdout} if merged else {"stdout": proc.stdout,
                                                          "stderr": proc.stderr}
        self._pump_streams(reader, {name: _reader(stream) for name, stream in streams.items()})

    async def wait(self) -> int:
        await self._pumped()
        with contextlib.suppress(asyncssh.Error, OSError):
            await self._proc.wait_closed()
        if self._reader.exit_code is not None:
            return self._reader.exit_code
        status = self._proc.exit_status
        if status is None or status < 0:
            # The session's own process ended by a signal (someone's pkill -f, say): sshd sends
            # exit-signal (name, core dumped, message, language) rather than a status.
            exit_signal = self._proc.exit_signal
            return signal_exit_code(exit_signal[0]) if exit_signal else 255
        return status

    async def close_stdin(self) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            self._proc.stdin.write_eof()

    async def write(self, data: bytes) -> None:
        with contextlib.suppress(asyncssh.Error, OSError, BrokenPipeError):
            self._proc.stdin.write(data)
            await self._proc.stdin.drain()


class SSHHost(Host):
    def __init__(self, label: str, conn: asyncssh.SSHClientConnection,
                 watcher: _Watcher | None = None, keepalive_s: float = 3.0) -> None:
        self.label = label
        self._conn = conn
        self._watcher = watcher
        self._keepalive_s = keepalive_s
        self._forwarding = True

    async def wait_lost(self) -> str:
        """When the connection has closed (here, by the node, or by keepalives): why."""
        await self._conn.wait_closed()
        return lost_reason(self._watcher.lost if self._watcher else None, self._keepalive_s)

    async def run(self, argv: Sequence[str], input: bytes | None = None,
                  timeout: float | None = 30.0) -> Completed:
        try:
            result = await asyncio.wait_for(
                self._conn.run(shlex.join(argv), input=input, encoding=None, check=False),
                timeout)
        except TimeoutError:
            return Completed(124, "", f"{argv[0]}: timed out after {timeout} s")
        except (asyncssh.Error, OSError) as exc:
            return Completed(255, "", f"connection to {self.label} failed: {exc}")
        rc = result.exit_status if result.exit_status is not None else 255
        out = result.stdout or b""
        err = result.stderr or b""
        return Completed(rc, _text(out), _text(err))

    async def spawn(self, argv: Sequence[str], merge_stderr: bool = False,
                    launched: bool = True) -> Spawned:
        try:
            proc = await self._conn.create_process(
                shlex.join(argv), encoding=None,
                stderr=asyncssh.STDOUT if merge_stderr else asyncssh.PIPE,
            )
        except asyncssh.Error as exc:  # the connection is gone: an OSError, as LocalHost's
            raise OSError(f"connection to {self.label} failed: {exc}") from None
        reader = ChunkReader()
        spawned = SSHSpawned(proc, reader, merge_stderr)
        if not launched:
            return spawned
        await pid_or_exit(reader, proc.wait_closed())
        spawned.pgid = reader.pgid
        return spawned

    async def open_stream(self, host: str, port: int) -> tuple[Any, Any]:
        """Through the node's sshd (a direct-tcpip channel), bytes both ways."""
        try:
            return await asyncio.wait_for(self._conn.open_connection(host, port), 5.0)
        except asyncssh.ChannelOpenError as exc:
            raise OSError(f"{self.label}: {exc.reason}") from None

    def address(self) -> str | None:
        peer = self._conn.get_extra_info("peername")
        return str(peer[0]) if peer else None

    async def send_file(self, local: Path, remote: str, offset: int,
                        progress: Callable[[int], None]) -> None:
        """Over SFTP on this connection (encrypted), SFTP_REQUESTS writes in flight."""
        async with self._conn.start_sftp_client() as sftp:
            folder = posixpath.dirname(remote)
            if folder:
                await sftp.makedirs(folder, exist_ok=True)
            mode = "r+b" if offset and await sftp.exists(remote) else "wb"
            async with sftp.open(remote, mode) as dst:
                await dst.truncate(offset)
                done = offset
                pending: set[asyncio.Future[int]] = set()
                with local.open("rb") as src:
                    src.seek(offset)
                    position = offset
                    while block := src.read(SFTP_BLOCK):
                        pending.add(asyncio.ensure_future(dst.write(block, position)))
                        position += len(block)
                        if len(pending) >= SFTP_REQUESTS:
                            finished, pending = await asyncio.wait(
                                pending, return_when=asyncio.FIRST_COMPLETED)
                            done += sum(f.result() for f in finished)
                            progress(done)
                    if pending:
                        done += sum(await asyncio.gather(*pending))
                        progress(done)

    async def port_open(self, host: str, port: int) -> bool:
        """Opened through the node's sshd (a direct-tcpip channel): no process on the node.

        Where the node's sshd forbids forwarding, a one-shot connect by the node's shell does it.
        """
        if self._forwarding:
            try:
                reader, writer = await asyncio.wait_for(
                    self._conn.open_connection(host, port), 5.0)
            except asyncssh.ChannelOpenError as exc:
                if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                    self._forwarding = False
                else:
                    return False
            except (OSError, TimeoutError):
                return False
            else:
                writer.close()
                return True
        script = 'exec 3<>"/dev/tcp/$0/$1"'
        result = await self.run(["bash", "-c", script, host, str(port)], timeout=5.0)
        return result.rc == 0

    async def forward_local(self, listen_host: str, listen_port: int, dest_host: str,
                            dest_port: int) -> Forward:
        if not self._forwarding:
            raise UserError(f"node {self.label}'s sshd does not allow TCP forwarding, which "
                            f"transport \"ssh\" needs",
                            "set AllowTcpForwarding yes in its sshd_config (at least for your "
                            "user), or use transport = \"tcp\" for it")
        try:
            return await self._conn.forward_local_port(listen_host, listen_port, dest_host,
                                                       dest_port)
        except OSError as exc:
            raise UserError(f"cannot listen on {listen_host}:{listen_port} here for node "
                            f"{self.label}'s server: {exc.strerror or exc}",
                            "stop what uses that address and port on this machine") from None

    async def close(self) -> None:
        self._conn.close()
        with contextlib.suppress(asyncssh.Error, OSError):
            await self._conn.wait_closed()
