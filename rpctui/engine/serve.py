"""A server job (`rpctui serve`, or any run whose job.kind is "server"): llama-server over the
cluster as a supervised service.

Once the rpc-servers are up, llama-server starts on the main node; rpctui waits for its
/health to answer 200 and sends one real completion through it. Then it watches: when an
rpc-server dies or llama-server exits, it ends llama-server, waits (the profile's back-off,
doubled each time), starts every rpc-server and llama-server again and waits for health once
more, telling the user each time (ServiceStatus), up to the profile's restart limit. The
user's stop (Ctrl-C, SIGTERM, the app's stop) ends it; teardown ends everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any, Protocol

from rpctui.errors import ExitCode, UserError
from rpctui.run import events as ev

if TYPE_CHECKING:
    from rpctui.engine.servers import ServerWatch
    from rpctui.hosts.base import Host
    from rpctui.profile.schema import Profile


class Engine(Protocol):
    """What the service uses of the engine that runs it (the Orchestrator is one)."""

    profile: Profile
    hosts: dict[str, Host]
    watches: dict[str, ServerWatch]
    jobs_running: bool

    stop_asked: bool

    def emit(self, event: ev.Event) -> None: ...
    async def run_job(self, step: int, n_servers: int) -> int: ...
    async def end_job(self) -> None: ...
    async def restart_servers(self, settings: dict[str, Any]) -> None: ...

HEALTH_POLL_S = 0.1
COMPLETION = {"prompt": "The quick brown fox", "n_predict": 8, "temperature": 0}


async def http(host: Host, port: int, method: str, path: str,
               body: dict[str, Any] | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    """One HTTP/1.0 request to 127.0.0.1:port on the node: (status, body)."""
    reader, writer = await host.open_stream("127.0.0.1", port)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        writer.write((f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
                     .encode() + data)
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    head, _, rest = bytes(raw).partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer: {head[:60]!r}")
    return int(parts[1]), rest


async def _healthy(orch: Engine, host: Host, job: asyncio.Task[int]) -> bool:
    """Poll /health until it answers 200 (True), or llama-server exits or takes too long."""
    settings = orch.profile.job
    deadline = time.monotonic() + settings.health_timeout_s
    while not job.done() and time.monotonic() < deadline:
        with contextlib.suppress(OSError, TimeoutError):
            status, _ = await http(host, settings.server_port, "GET", "/health", timeout=5)
            if status == 200:
                return True
        await asyncio.sleep(HEALTH_POLL_S)
    return False


async def _first_failure(orch: Engine, job: asyncio.Task[int]) -> str:
    """What ended the service: llama-server's exit or an rpc-server's, whichever comes first."""
    watches = dict(orch.watches)
    waits: dict[asyncio.Future[Any], str] = {
        asyncio.ensure_future(w.exited.wait()): ep for ep, w in watches.items()}
    try:
        done, _ = await asyncio.wait({job, *waits}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    for task in done:
        if task in waits:
            dead = watches[waits[task]]
            return f"rpc-server {dead.endpoint} on {dead.node} exited (code {dead.rc})"
    return f"llama-server exited (code {job.result() if not job.cancelled() else '?'})"


async def supervise(orch: Engine) -> ExitCode:
    """Keep llama-server up over the started servers until the user stops it (Ctrl-C, the
    app's stop) or it failed more often than the profile allows."""
    settings = orch.profile.job
    if orch.profile.sweep is not None:
        raise UserError("a sweep does not apply to a server job (rpctui serve)",
                        "remove [sweep] from the profile, or use a bench job", ExitCode.USAGE)
    main = orch.profile.main_node
    url = f"http://127.0.0.1:{settings.server_port} on {main.label}"
    host = orch.hosts[main.label]
    n_servers = len(orch.profile.servers())
    restarts = 0
    job: asyncio.Task[int] | None = None
    orch.jobs_running, orch.stop_asked = True, False
    try:
        while not orch.stop_asked:
            orch.emit(ev.ServiceStatus(state="loading", url=url, restarts=restarts,
                                       message=f"llama-server starting at {url}"))
            job = asyncio.create_task(orch.run_job(restarts, n_servers))
            why = await _until_failure(orch, host, job, url, restarts)
            await orch.end_job()
            with contextlib.suppress(Exception):
                await job
            if orch.stop_asked:
                break
            if restarts >= settings.restart_limit:
                orch.emit(ev.ServiceStatus(state="failed", url=url, restarts=restarts, message=(
                    f"{why}; restarted {restarts} times already (restart_limit): giving up")))
                return ExitCode.FAILED
            restarts += 1
            wait = settings.restart_backoff_s * 2 ** (restarts - 1)
            orch.emit(ev.ServiceStatus(state="restarting", url=url, restarts=restarts, message=(
                f"{why}; restart {restarts} of {settings.restart_limit} in {wait:g} s")))
            await asyncio.sleep(wait)
            if not orch.stop_asked:
                await orch.restart_servers({})
        orch.emit(ev.ServiceStatus(state="stopped", url=url, restarts=restarts,
                                   message=f"llama-server at {url} stopped as asked"))
        return ExitCode.OK
    finally:
        if job is not None and not job.done():
            job.cancel()  # stopped from outside (Ctrl-C, SIGTERM): teardown ends llama-server
            await asyncio.wait([job])
        orch.jobs_running = False


async def _until_failure(orch: Engine, host: Host, job: asyncio.Task[int], url: str,
                         restarts: int) -> str:
    """Wait for health, send the one completion, then wait for what ends the service: why."""
    settings = orch.profile.job
    started = time.monotonic()
    if not await _healthy(orch, host, job):
        if job.done():
            return f"llama-server exited before it answered /health (code {job.result()})"
        return f"llama-server did not answer /health within {settings.health_timeout_s:g} s"
    t0 = time.monotonic()
    try:
        status, body = await http(host, settings.server_port, "POST", "/completion",
                                  COMPLETION, timeout=120)
    except (OSError, TimeoutError) as exc:
        return f"a completion through llama-server failed: {exc or type(exc).__name__}"
    answer = _json(body) if status == 200 else {}
    if "content" not in answer:
        return f"a completion through llama-server answered {status}: {body[:200]!r}"
    orch.emit(ev.ServiceStatus(state="healthy", url=url, restarts=restarts, message=(
        f"llama-server at {url} is healthy after {t0 - started:.1f} s; a completion of "
        f"{answer.get('tokens_predicted', '?')} tokens came back in "
        f"{time.monotonic() - t0:.2f} s")))
    return await _first_failure(orch, job)


def _json(body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}
