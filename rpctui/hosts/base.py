"""How rpctui reaches a machine: the Host protocol and the launcher every process goes through.

Every long-running process (rpc-server, the job) is started through
:func:`launcher_argv`, a few lines of POSIX sh that

* put the process in a new session and process group (``setsid``), so the
  whole tree can be ended with one ``kill -- -PGID``;
* print ``@@rpctui-pid PGID CHILD`` first, so the PID is known before anything
  else happens;
* watch their own stdin: when rpctui closes it, dies, or the SSH connection is
  lost, the group is ended; orphans cannot outlive rpctui;
* print ``@@rpctui-exit RC`` when the process ends, so the exit code survives
  channels that lose it;
* on TERM, INT or HUP (teardown signals the whole group) wait for, and so reap, the process
  and the watcher before exiting: a launcher that died first would leave its child a zombie
  until the node's init got round to it.

Commands are argv lists everywhere; :mod:`rpctui.hosts.ssh` quotes them once.
"""

from __future__ import annotations

import abc
import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MARK = "@@rpctui-"


def _marker_prefix_len(text: str) -> int:
    """Length of the longest tail of ``text`` that is a start of MARK."""
    for n in range(min(len(MARK) - 1, len(text)), 0, -1):
        if MARK.startswith(text[-n:]):
            return n
    return 0

_LAUNCHER = r"""
echo "@@rpctui-pid $$"
exec 3<&0
"$@" </dev/null &
child=$!
echo "@@rpctui-child $child"
( while read -r _ <&3; do :; done; kill -s TERM -- -$$ 2>/dev/null ) &
watch=$!
finish() {
  kill $watch 2>/dev/null
  wait $watch 2>/dev/null
  echo "@@rpctui-exit $rc"
  exit $rc
}
trap 'kill -s TERM $child 2>/dev/null; wait $child 2>/dev/null; rc=$?; finish' TERM INT HUP
wait $child
rc=$?
finish
"""

_KILL = r"""
sig=TERM
for pg in "$@"; do kill -s TERM -- -"$pg" 2>/dev/null; done
i=0
while :; do
  alive=""
  for pg in "$@"; do
    if ps -o stat= -s "$pg" 2>/dev/null | grep -qv '^Z'; then alive="$alive $pg"; fi
  done
  [ -z "$alive" ] && exit 0
  i=$((i+1))
  if [ $i -eq 60 ]; then sig=KILL; for pg in $alive; do kill -s KILL -- -"$pg" 2>/dev/null; done; fi
  if [ $i -ge 120 ]; then echo "still running:$alive"; exit 1; fi
  sleep 0.05
done
"""


def launcher_argv(argv: Sequence[str], env: Mapping[str, str] | None = None,
                  limit_as_kib: int | None = None, stdbuf: bool = False) -> list[str]:
    """The argv that starts ``argv`` under the launcher (see the module docstring)."""
    script = _LAUNCHER
    if limit_as_kib:
        script = f"ulimit -v {int(limit_as_kib)} || exit 97\n" + script
    inner: list[str] = []
    if env:
        inner += ["env", *(f"{k}={v}" for k, v in env.items())]
    if stdbuf:
        # Where the node has stdbuf (coreutils): the rpc-server banner otherwise sits in a
        # pipe buffer until the first client connects.
        inner += ["stdbuf", "-oL", "-eL"]
    inner += list(argv)
    return ["setsid", "-w", "sh", "-c", script, "rpctui", *inner]


def agent_source(agent: Path, config: Mapping[str, object]) -> bytes:
    """An agent file (probe or sampler) with its CONFIG prepended, ready to send to a node."""
    head = f"import json\nCONFIG = json.loads({json.dumps(dict(config))!r})\n"
    return head.encode() + agent.read_bytes()


def agent_argv(python: str, source: bytes, name: str) -> list[str]:
    """Run a Python agent whose source arrives first on stdin; stdin stays open after it.
    No -S here: a long-lived agent wants site-packages (pynvml, pyamdgpuinfo)."""
    loader = (f"import sys;exec(compile(sys.stdin.buffer.read({len(source)}),"
              f"{name!r},'exec'))")
    return [python, "-u", "-c", loader]


def kill_argv(pgids: Sequence[int]) -> list[str]:
    """End whole process groups: TERM, then KILL after 3 s; exit 0 only when all are gone."""
    return ["sh", "-c", _KILL, "rpctui-kill", *(str(p) for p in pgids)]


def signal_exit_code(name: str) -> int:
    """The shell's code (128 + N) for a signal as SSH names it in exit-signal ("TERM", "SEGV");
    255, SSH's "unknown", for a name this system does not know."""
    try:
        return 128 + signal.Signals[f"SIG{name.removeprefix('SIG')}"].value
    except KeyError:
        return 255


def exit_signal_name(rc: int | None) -> str | None:
    """The signal behind a shell exit code of 128 + N ("SIGKILL" for 137); None for others."""
    if rc is None or not 128 < rc < 128 + 65:
        return None
    try:
        return signal.Signals(rc - 128).name
    except ValueError:
        return None


#: Signals that mean the program itself failed, rather than that something ended it.
CRASH_SIGNALS = frozenset({"SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE"})


@dataclass(frozen=True)
class Completed:
    """A finished short command."""

    rc: int
    stdout: str
    stderr: str


READ_SIZE = 65536
Read = Callable[[], Awaitable[bytes]]


class Spawned(abc.ABC):
    """A process started through the launcher: its output as chunks, then its exit code.

    Both hosts feed it the same way: one pump per output stream into one queue, stdout
    through the ChunkReader that takes out the launcher's marker lines."""

    pgid: int | None = None
    child_pid: int | None = None

    def _pump_streams(self, reader: ChunkReader, streams: dict[str, Read]) -> None:
        self._reader = reader
        self._queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        self._tasks = [asyncio.create_task(self._pump(name, read)) for name, read in streams.items()]

    async def _pump(self, name: str, read: Read) -> None:
        try:
            while data := await read():
                text = data.decode("utf-8", errors="replace")
                if name == "stdout":
                    text = self._reader.feed(text)
                    self.pgid = self._reader.pgid
                    self.child_pid = self._reader.child_pid
                if text:
                    await self._queue.put((name, text))
        finally:
            await self._queue.put(None)

    async def chunks(self) -> AsyncIterator[tuple[str, str]]:
        """Yield ("stdout" | "stderr", text) as output arrives, launcher lines removed."""
        open_streams = len(self._tasks)
        while open_streams:
            item = await self._queue.get()
            if item is None:
                open_streams -= 1
                continue
            yield item

    async def _pumped(self) -> None:
        """Wait until every stream has been read to its end."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @abc.abstractmethod
    async def wait(self) -> int:
        """The process's exit code (128 + signal when killed by one)."""

    @abc.abstractmethod
    async def close_stdin(self) -> None:
        """Close our end of stdin: the launcher then ends the process group."""

    @abc.abstractmethod
    async def write(self, data: bytes) -> None:
        """Send bytes to the process's stdin (agents read their source and commands there)."""


async def pid_or_exit(reader: ChunkReader, exited: Awaitable[object]) -> None:
    """Wait until the launcher has told its PID, or the process has already ended."""
    pid = asyncio.create_task(reader.pid_known.wait())
    done = asyncio.ensure_future(exited)
    await asyncio.wait({pid, done}, return_when=asyncio.FIRST_COMPLETED)
    pid.cancel()
    if not done.done():
        done.cancel()


class Host(abc.ABC):
    """One machine: run short commands, spawn long ones, end process groups."""

    label: str
    is_local: bool = False

    @abc.abstractmethod
    async def run(self, argv: Sequence[str], input: bytes | None = None,
                  timeout: float | None = 30.0) -> Completed:
        """Run a short command to completion."""

    @abc.abstractmethod
    async def spawn(self, argv: Sequence[str], merge_stderr: bool = False,
                    launched: bool = True) -> Spawned:
        """Start argv; for a launcher argv (see :func:`launcher_argv`), return once its PID is
        known. ``launched=False`` starts a plain process (an agent) and returns at once."""

    async def kill_groups(self, pgids: Sequence[int]) -> Completed:
        """End process groups and wait until they are gone."""
        return await self.run(kill_argv(pgids), timeout=15.0)

    @abc.abstractmethod
    async def port_open(self, host: str, port: int) -> bool:
        """Whether host:port accepts a TCP connection, as seen from this node."""

    @abc.abstractmethod
    async def open_stream(self, host: str, port: int) -> tuple[Any, Any]:
        """A TCP connection to host:port as this node sees it: (reader, writer) of bytes."""

    def address(self) -> str | None:
        """The node's address as this machine reaches it (its SSH peer); None for this one."""
        return None

    @abc.abstractmethod
    async def send_file(self, local: Path, remote: str, offset: int,
                        progress: Callable[[int], None]) -> None:
        """Copy the local file into ``remote`` on this node from byte ``offset`` on (what is
        before it stays); ``progress`` gets the bytes there so far."""

    async def wait_lost(self) -> str:
        """When the connection to this node is gone (never, for this machine): why."""
        await asyncio.Event().wait()
        return ""

    async def forward_local(self, listen_host: str, listen_port: int, dest_host: str,
                            dest_port: int) -> Forward:
        """Listen on listen_host:listen_port on this machine; each connection there goes on,
        through this node's connection, to dest_host:dest_port as the node sees it."""
        from rpctui.errors import UserError

        raise UserError(f"node {self.label} is not reached over SSH: it has no SSH forward",
                        "use transport = \"tcp\" for it")

    @abc.abstractmethod
    async def close(self) -> None:
        """Drop the connection (nothing started through the launcher survives it)."""


class Forward(Protocol):
    """A listening SSH forward (asyncssh's SSHListener is one)."""

    def close(self) -> None: ...


async def json_lines(spawned: Spawned, each: Callable[[dict[str, object]], None]) -> str:
    """Feed each JSON object an agent prints on stdout to ``each`` until it exits; its
    stderr, for errors."""
    split = LineSplitter()
    errors = ""
    async for stream, text in spawned.chunks():
        if stream != "stdout":
            errors += text
            continue
        for line in split.feed(text):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                each(data)
    await spawned.wait()
    return errors


class LineSplitter:
    """Chunks in, complete lines out; a partial line waits for the rest."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, text: str) -> list[str]:
        text = self._partial + text
        lines = text.split("\n")
        self._partial = lines.pop()
        return [line.rstrip("\r") for line in lines]

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, ""
        return [rest] if rest else []


class ChunkReader:
    """Turns the launcher's stdout into (pgid, child) and user output; shared by both hosts."""

    def __init__(self) -> None:
        self.pgid: int | None = None
        self.child_pid: int | None = None
        self.exit_code: int | None = None
        self._pending = ""
        self.pid_known = asyncio.Event()

    def feed(self, text: str) -> str:
        """Strip launcher marker lines from a stdout chunk; return what remains.

        A marker may arrive split across chunks: a line tail that could still become one
        is held back until the next chunk decides.
        """
        text = self._pending + text
        self._pending = ""
        out: list[str] = []
        for line in text.splitlines(keepends=True):
            head, mark, tail = line.partition(MARK)
            if mark:
                out.append(head)
                if line.endswith("\n"):
                    self._marker((mark + tail).strip())
                else:
                    self._pending = mark + tail
            elif line.endswith("\n"):
                out.append(line)
            else:
                keep = _marker_prefix_len(line)
                out.append(line[:len(line) - keep])
                self._pending = line[len(line) - keep:]
        return "".join(out)

    def _marker(self, line: str) -> None:
        parts = line.split()
        if parts[0] == "@@rpctui-pid":
            self.pgid = int(parts[1])
            self.pid_known.set()
        elif parts[0] == "@@rpctui-child":
            self.child_pid = int(parts[1])
        elif parts[0] == "@@rpctui-exit":
            self.exit_code = int(parts[1])
