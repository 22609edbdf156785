"""`rpctui models push`: the model where it is needed, copied once, verified by a hash.

The source is ``job.model_source`` on this machine (every shard of a split model); the copy
goes to ``job.model``'s path on the main node, when that is another machine. Before sending,
the file agent (hosts/agents/files.py) reports what the node has: a copy whose ``.sha256``
(written beside it once a copy was verified, newer than the file) names the source's hash is
skipped without reading it; ``verify`` reads every copy again. A push resumes an unfinished
``.rpctui-part`` file, checks free disk first, and ends with the node hashing what it got: a
copy that does not match is removed and reported. Bytes travel as a direct TCP stream to a
one-time listener on the node (its address as SSH reaches it; the listener takes only the
connection that opens with a random token), the kernel's sendfile on this side, or over SFTP
on the SSH connection (``push_over = "ssh"``, nodes with transport "ssh", or a listener that
cannot be reached).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rpctui.errors import ExitCode, UserError
from rpctui.hosts.base import Host, Spawned, agent_argv, agent_source, json_lines
from rpctui.paths import cache_dir
from rpctui.plan.gguf import shards
from rpctui.profile.schema import Node, Profile
from rpctui.run import events as ev

_AGENT = Path(__file__).resolve().parent.parent / "hosts" / "agents" / "files.py"
PROGRESS_S = 0.5  #: at most this often a "sending" event per file
LISTEN_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Copy:
    """One file to put on one node."""

    node: Node
    source: Path
    path: str  #: on the node
    size: int
    sha256: str


def targets(profile: Profile) -> list[tuple[Node, list[tuple[Path, str]]]]:
    """Which node gets which files: (node, [(source here, path there)]): the main node, and
    nodes whose servers fill their tensor cache from a local copy (cache_fill)."""
    job = profile.job
    if not job.model_source:
        return []
    sources = shards(Path(job.model_source).expanduser())
    dests = [str(p) for p in shards(job.model)]
    if len(sources) != len(dests):
        raise UserError(f"{profile.path}: job.model_source has {len(sources)} shards but "
                        f"job.model names {len(dests)}", "make both name the same split model",
                        ExitCode.USAGE)
    for src in sources:
        if not src.is_file():
            raise UserError(f"model source {src} does not exist on this machine",
                            "fix job.model_source in the profile", ExitCode.USAGE)
    pairs = list(zip(sources, dests, strict=True))
    here = all(src.resolve() == Path(d).resolve() for src, d in pairs)
    return [(node, pairs) for node in profile.nodes
            if (node.main or any(s.cache_fill for s in node.servers))
            and not (node.is_local and here)]


def local_sha256(path: Path) -> str:
    """The file's sha256, remembered by path, size and mtime in rpctui's cache."""
    st = path.stat()
    key = str(path.resolve())
    store = cache_dir() / "hashes.json"
    known: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(store.read_text())
    entry = known.get(key)
    if isinstance(entry, list) and entry[:2] == [st.st_size, st.st_mtime_ns]:
        return str(entry[2])
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    known[key] = [st.st_size, st.st_mtime_ns, digest.hexdigest()]
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_suffix(".tmp")
    tmp.write_text(json.dumps(known))
    tmp.replace(store)
    return digest.hexdigest()


async def _agent(host: Host, node: Node, config: dict[str, Any]) -> Spawned:
    source = agent_source(_AGENT, config)
    spawned = await host.spawn(agent_argv(node.python, source, "rpctui-files"), launched=False)
    await spawned.write(source)
    return spawned


async def stat_copies(host: Host, node: Node, paths: list[str],
                      verify: bool) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    spawned = await _agent(host, node, {"role": "stat", "paths": paths, "hash": verify})
    errors = await json_lines(spawned, found.append)
    if len(found) != len(paths):
        raise UserError(f"node {node.label}: could not look at {paths[0]}: "
                        f"{(errors.strip().splitlines() or ['no answer'])[-1]}",
                        "check the node's python3 and that the model's folder is writable")
    return found


class Pusher:
    """Pushes one profile's model files, telling ``emit`` about each."""

    def __init__(self, profile: Profile, hosts: dict[str, Host],
                 emit: Callable[[ev.Event], None], verify: bool = False) -> None:
        self.profile = profile
        self.hosts = hosts
        self.emit = emit
        self.verify = verify

    async def run(self) -> bool:
        """Push every file to every node that needs it (nodes in parallel); all went well."""
        plan = targets(self.profile)
        results = await asyncio.gather(*(self.node(node, pairs) for node, pairs in plan))
        return all(results)

    async def node(self, node: Node, pairs: list[tuple[Path, str]]) -> bool:
        """Push these files to one node; whether every one is there, verified."""
        host = self.hosts[node.label]
        for src, dest in pairs:
            self.emit(ev.ModelPush(node=node.label, path=dest, state="checking",
                                   total_bytes=src.stat().st_size))
        copies = [Copy(node, src, dest, src.stat().st_size,
                       await asyncio.to_thread(local_sha256, src)) for src, dest in pairs]
        there = await stat_copies(host, node, [c.path for c in copies], self.verify)
        needed = 0
        todo = []
        for copy, st in zip(copies, there, strict=True):
            have = st.get("sha256") if self.verify else st.get("recorded")
            if st.get("exists") and st.get("size") == copy.size and have == copy.sha256:
                self.emit(ev.ModelPush(node=node.label, path=copy.path, state="skipped",
                          done_bytes=copy.size, total_bytes=copy.size, message=(
                              "identical (hash read again)" if self.verify else
                              "identical (its .sha256 matches, and is newer than the file)")))
                continue
            if st.get("exists") and self.verify and st.get("sha256") != copy.sha256:
                why = "differs from the source (hash read again): sent again"
            elif st.get("exists"):
                why = "differs from the source or was never verified: sent again"
            else:
                why = ""
            offset = int(st.get("part") or 0) if 0 < int(st.get("part") or 0) <= copy.size else 0
            todo.append((copy, offset, why))
            needed += copy.size - offset
        if todo and needed > int(there[0].get("free") or 0):
            free = int(there[0].get("free") or 0)
            for copy, _, _ in todo:
                self.emit(ev.ModelPush(node=node.label, path=copy.path, state="failed",
                          total_bytes=copy.size, message=(
                              f"not enough free disk: {needed / 2**30:.2f} GiB to write, "
                              f"{free / 2**30:.2f} GiB free there")))
            return False
        ok = True
        for copy, offset, why in todo:
            ok = await self._send(host, copy, offset, why) and ok
        return ok

    async def _send(self, host: Host, copy: Copy, offset: int, why: str) -> bool:
        node = copy.node
        start = time.monotonic()
        told = [0.0]

        def progress(done: int, how: str) -> None:
            now = time.monotonic()
            if now - told[0] >= PROGRESS_S:
                told[0] = now
                self.emit(ev.ModelPush(node=node.label, path=copy.path, state="sending",
                          done_bytes=done, total_bytes=copy.size, how=how, rate_bytes_per_s=(
                              (done - offset) / max(now - start, 1e-9)), message=why))

        note = f"resuming at {offset / 2**20:.0f} MiB" if offset else why
        self.emit(ev.ModelPush(node=node.label, path=copy.path, state="sending",
                               done_bytes=offset, total_bytes=copy.size, message=note))
        address = host.address()
        result: dict[str, Any] = {}
        how = "copy" if address is None else "sftp"
        if address is not None and not node.tunnel and self.profile.job.push_over == "tcp":
            try:
                result = await self._stream(host, copy, offset, address,
                                            lambda d: progress(d, "tcp"))
                how = "tcp"
            except OSError as exc:
                self.emit(ev.Notice(node=node.label, message=(
                    f"{copy.path}: a direct stream to {node.label} failed ({exc}); sending "
                    f"over SSH instead")))
        if not result:
            await host.send_file(copy.source, copy.path + ".rpctui-part", offset,
                                 lambda d: progress(d, how))
            spawned = await _agent(host, node, {"role": "finish", "path": copy.path,
                                                "sha256": copy.sha256})
            errors = await json_lines(spawned, result.update)
            if not result:
                result = {"ok": False, "error": errors.strip()[-300:] or "no answer"}
        took = time.monotonic() - start
        if result.get("ok"):
            self.emit(ev.ModelPush(node=node.label, path=copy.path, state="sent",
                      done_bytes=copy.size, total_bytes=copy.size, how=how,
                      rate_bytes_per_s=(copy.size - offset) / max(took, 1e-9),
                      message=f"verified (sha256 {copy.sha256[:12]}) in {took:.1f} s"))
            return True
        message = result.get("error") or (
            f"the copy's sha256 {str(result.get('sha256'))[:12]} is not the source's "
            f"{copy.sha256[:12]}: removed, push again")
        self.emit(ev.ModelPush(node=node.label, path=copy.path, state="failed", how=how,
                               total_bytes=copy.size, message=str(message)))
        return False

    async def _stream(self, host: Host, copy: Copy, offset: int, address: str,
                      progress: Callable[[int], None]) -> dict[str, Any]:
        """The direct TCP stream: the node listens, this machine connects and sends."""
        token = secrets.token_bytes(32)
        spawned = await _agent(host, copy.node, {
            "role": "receive", "path": copy.path, "bind": address, "offset": offset,
            "size": copy.size, "sha256": copy.sha256, "token": token.hex(),
            "limit_s": LISTEN_TIMEOUT_S})
        listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        result: dict[str, Any] = {}

        def line(data: dict[str, Any]) -> None:
            if "listening" in data and not listening.done():
                listening.set_result(int(data["listening"]))
            elif "got" in data:
                progress(int(data["got"]))
            elif "ok" in data:
                result.update(data)

        reading = asyncio.ensure_future(json_lines(spawned, line))
        try:
            waiting: set[asyncio.Future[Any]] = {listening, reading}
            await asyncio.wait(waiting, timeout=LISTEN_TIMEOUT_S,
                               return_when=asyncio.FIRST_COMPLETED)
            if not listening.done():
                raise OSError("the receiving agent did not start")
            await asyncio.to_thread(_send_stream, address, listening.result(), token,
                                    copy.source, offset, copy.size)
            await reading
        finally:
            if not reading.done():
                await spawned.close_stdin()
                reading.cancel()
        if not result:
            raise OSError("the receiving agent ended without a verdict")
        return result


def _send_stream(address: str, port: int, token: bytes, source: Path, offset: int,
                 size: int) -> None:
    with socket.create_connection((address, port), timeout=10) as sock, source.open("rb") as fh:
        sock.settimeout(60)
        sock.sendall(token)
        sent = sock.sendfile(fh, offset, size - offset)
        if sent != size - offset:
            raise OSError(f"sent {sent} of {size - offset} bytes")
