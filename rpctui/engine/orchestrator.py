"""The run's lifecycle: connect, probe, preflight, start servers, run the job, tear down.

The orchestrator owns the connections and the processes; it reports everything
it sees as events through ``emit`` and never draws anything. Teardown runs on
every way out (success, failure, Ctrl-C, SIGTERM): each process group started
on each node is ended and verified gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rpctui.engine import processes
from rpctui.engine.job import Job
from rpctui.engine.links import measure_links
from rpctui.engine.model import load_model_info
from rpctui.engine.preflight import preflight
from rpctui.engine.probe import link_peer, probe_node
from rpctui.engine.processes import Started
from rpctui.engine.resolve import resolve_bin_dirs, resolve_model
from rpctui.engine.sampling import Sampler
from rpctui.engine.servers import ServerWatch
from rpctui.engine.tasks import Background
from rpctui.engine.tokens import TokenProfiler
from rpctui.errors import ExitCode, UserError
from rpctui.hosts.base import Forward, Host, launcher_argv
from rpctui.hosts.local import LocalHost
from rpctui.llama import argv as largv
from rpctui.llama.caps import Capabilities
from rpctui.plan.gguf import ModelInfo
from rpctui.plan.plan import Plan, make_plan
from rpctui.profile.schema import Job as JobSettings
from rpctui.profile.schema import Node, Profile, SweepStep, endpoint
from rpctui.run import events as ev
from rpctui.run.monitor import SETTLE_S, Monitor
from rpctui.run.redact import profile_secrets, redact_text

Emit = Callable[[ev.Event], None]
MODEL_DAMAGED_FIX = ("the file is incomplete or damaged: download or copy it again, or point "
                     "job.model at another file")


@dataclass
class Orchestrator:
    profile: Profile
    emit_event: Emit
    build_progress: Callable[[str, float | None], None] | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    caps: dict[str, Capabilities] = field(default_factory=dict)
    started: list[Started] = field(default_factory=list)
    watches: dict[str, ServerWatch] = field(default_factory=dict)
    model: str = ""
    stopping: bool = False
    #: None before connect(), then whether the preflight passed
    prepared: bool | None = None
    servers_started: bool = False
    jobs_running: bool = False  #: the job, or a sweep of them, is under way
    stop_asked: bool = False  #: the user stopped the job (a server job is not restarted)
    samplers: dict[str, Sampler] = field(default_factory=dict)
    monitor: Monitor | None = None
    force: bool = False  #: launch even when the memory plan says it will not fit
    links: dict[str, ev.LinkMeasured] = field(default_factory=dict)  #: node -> its link test
    tokens: TokenProfiler | None = None  #: the running bench step's breakdown, when measured
    restarting: bool = False  #: the servers are being restarted with a sweep step's settings
    #: engine parts that watch the events too (the tuner reads its results this way)
    listeners: list[Callable[[ev.Event], None]] = field(default_factory=list)
    #: (address, port) here -> the SSH forward to a transport "ssh" node's server
    tunnels: dict[tuple[str, int], Forward] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.written = self.profile  #: the profile as loaded; a sweep step varies its servers
        self.planned_job: JobSettings = self.profile.job  #: the job the last plan was made for
        self.model_info: ModelInfo | None = None
        self.background = Background(lambda message: self.emit(ev.Notice(message=message)))
        self.caps_events: list[ev.Event] = []
        self.t0 = time.monotonic()
        self.nodes = {n.label: n for n in self.profile.nodes}
        self.lost: dict[str, str] = {}  #: node -> why: its connection died during the run
        #: the profile's secret values (rpctui.run.redact), hidden in any line that shows one
        self.secrets = profile_secrets(self.profile)
        #: who started the servers, in their environment: another rpctui's preflight names it
        self.owner = (f"profile {self.profile.name or Path(self.profile.path).name or '?'} "
                      f"from {socket.gethostname()}, rpctui pid {os.getpid()}")

    # -- events ---------------------------------------------------------------------------------

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def emit(self, event: ev.Event) -> None:
        """Publish an event built here, stamped with the run's clock; a line that shows one of
        the profile's secrets shows *** instead."""
        if self.secrets:
            if isinstance(event, ev.ServerLog | ev.JobLog):
                event = dataclasses.replace(event, line=redact_text(event.line, self.secrets))
            elif isinstance(event, ev.Notice):
                event = dataclasses.replace(event,
                                            message=redact_text(event.message, self.secrets))
            elif isinstance(event, ev.ServerExited):
                event = dataclasses.replace(event, tail=tuple(
                    redact_text(line, self.secrets) for line in event.tail))
            elif isinstance(event, ev.JobFinished):
                event = dataclasses.replace(event, diagnosis=redact_text(event.diagnosis,
                                                                         self.secrets))
        self.publish(dataclasses.replace(event, t=self.now()))

    def publish(self, event: ev.Event) -> None:
        """Emit an event, then what the monitor derives from it (progress, OOM risk)."""
        self.emit_event(event)
        for listen in self.listeners:
            listen(event)
        if self.tokens is not None:
            self.tokens.observe(event)
        if self.monitor is not None:
            for derived in self.monitor.observe(event):
                self.emit_event(derived)

    # -- connect and probe ----------------------------------------------------------------------

    async def connect_node(self, node: Node) -> Host:
        self.emit(ev.NodeConnecting(node=node.label, host=node.host))
        start = time.monotonic()
        if node.is_local:
            host: Host = LocalHost(node.label)
        else:
            from rpctui.hosts.ssh import connect

            host = await connect(node)
        self.emit(ev.NodeConnected(node=node.label, elapsed_s=round(time.monotonic() - start, 4)))
        return host

    async def _probe(self, node: Node, host: Host, bin_dirs: list[str]) -> Capabilities:
        caps = await probe_node(node, host, bin_dirs, self.model if node.main else None,
                                link_peer(self.profile, node))
        self.caps_events.append(ev.NodeProbed(node=node.label, mem_total_mib=caps.mem_total_mib,
                                              mem_available_mib=caps.mem_available_mib))
        self.emit(ev.NodeProbed(node=node.label, hostname=caps.hostname, flavour=caps.flavour,
                  build=caps.build, protocol=caps.protocol or "",
                  devices=tuple(ev.DeviceInfo(d.name, d.description, d.total_mib, d.free_mib)
                                for d in caps.devices),
                  tools=tuple((role, t.path) for role, t in caps.tools.items()),
                  mem_total_mib=caps.mem_total_mib, mem_available_mib=caps.mem_available_mib,
                  link=caps.link[0] if caps.link else "",
                  link_mbps=caps.link[1] if caps.link else None,
                  mtu=caps.link[2] if caps.link else None))
        return caps

    async def _connect_and_probe(self, node: Node) -> None:
        bin_dirs = await resolve_bin_dirs(node, self.build_progress)
        host = self.hosts.get(node.label)  # connected before, its probe failed: probe again
        if host is None:
            host = await self.connect_node(node)
            self.hosts[node.label] = host
            if not node.is_local:
                self.background.start(self._watch_connection(node, host),
                                      f"watching the connection to {node.label}")
        if self.profile.job.push_model:
            await self._push_to(node)
        self.caps[node.label] = await self._probe(node, host, bin_dirs)

    async def _push_to(self, node: Node, verify: bool = False) -> None:
        """The model files this node needs (job.model_source), before its probe looks."""
        from rpctui.engine.push import Pusher, targets

        for target, pairs in targets(self.profile):
            if target.label == node.label and not await Pusher(
                    self.profile, self.hosts, self.emit, verify).node(target, pairs):
                raise UserError(f"the model could not be pushed to {node.label}",
                                "see the push's lines above for why", ExitCode.FAILED)

    async def build_nodes(self, jobs: int | None = None) -> ExitCode:
        """`rpctui build PROFILE`: the profile's llama.cpp built (or copied) on its nodes."""
        from rpctui.engine.provision import Builder

        try:
            nodes = [n for n in self.profile.nodes if n.build]
            hosts = await asyncio.gather(*(self.connect_node(n) for n in nodes),
                                         return_exceptions=True)
            failed = False
            for node, host in zip(nodes, hosts, strict=True):
                if isinstance(host, UserError):
                    self.emit(ev.NodeFailed(node=node.label, message=host.message, fix=host.fix))
                    failed = True
                elif isinstance(host, BaseException):
                    raise host
                else:
                    self.hosts[node.label] = host
            if failed:
                return ExitCode.PREFLIGHT
            ok = await Builder(self.profile, self.hosts, self.emit, jobs).run()
            return ExitCode.OK if ok else ExitCode.FAILED
        finally:
            await asyncio.shield(self.teardown())

    async def push_models(self, verify: bool = False) -> ExitCode:
        """`rpctui models push`: connect to the nodes that need the model and push it."""
        from rpctui.engine.push import targets

        try:
            plan = targets(self.profile)
            if not plan:
                self.emit(ev.Notice(message="nothing to push: job.model_source is not set, or "
                                    "the main node is this machine and reads it in place"))
                return ExitCode.OK
            for node, _ in plan:
                self.hosts[node.label] = await self.connect_node(node)
            await asyncio.gather(*(self._push_to(node, verify) for node, _ in plan))
            return ExitCode.OK
        finally:
            await asyncio.shield(self.teardown())

    async def _watch_connection(self, node: Node, host: Host) -> None:
        """A node whose connection dies (SSH keepalives unanswered: its link, sshd or the
        machine is down) ends the job: llama.cpp's RPC would wait for it forever."""
        reason = await host.wait_lost()
        if self.stopping:
            return
        why = f"lost node {node.label}: {reason}"
        self.lost[node.label] = why
        self.emit(ev.NodeFailed(node=node.label, message=why, fix=(
            f"check {node.label}'s network and sshd, then run again; its processes end when "
            f"it sees the connection gone")))
        if self.jobs_running and node.label != self.profile.main_node.label:
            await self.end_job()

    async def connect_nodes(self) -> bool:
        """Connect to every node in parallel and probe it; whether all answered (a node that
        did not is a NodeFailed event)."""
        nodes = [n for n in self.profile.nodes if n.label not in self.caps]
        results = await asyncio.gather(*(self._connect_and_probe(n) for n in nodes),
                                       return_exceptions=True)
        failed = False
        for node, result in zip(nodes, results, strict=True):
            if isinstance(result, UserError):
                self.emit(ev.NodeFailed(node=node.label, message=result.message, fix=result.fix))
                failed = True
            elif isinstance(result, BaseException):
                if isinstance(result, (asyncio.CancelledError, KeyboardInterrupt)):
                    raise result
                self.emit(ev.NodeFailed(node=node.label, message=f"node {node.label}: {result!r}",
                          fix="run with --debug and report this"))
                failed = True
        return not failed

    async def prepare(self) -> bool:
        """Connect to every node in parallel, probe, and run the preflight. True when it passed."""
        self.model = await resolve_model(self.profile)
        if not await self.connect_nodes():
            self.emit(ev.PreflightDone(ok=False))
            return False
        self.monitor = self._make_monitor()
        for event in self.caps_events:
            self.monitor.observe(event)
        issues = preflight(self.profile, self.caps, self.model)
        for issue in issues:
            self.emit(issue)
        ok = not any(i.fatal for i in issues)
        if ok:
            ok = await self._check_plan()
        self.emit(ev.PreflightDone(ok=ok))
        return ok

    async def _check_plan(self) -> bool:
        """Refuse a launch whose predicted memory does not fit (unless forced)."""
        main = self.profile.main_node
        try:
            plan = await self.make_plan()
        except UserError as exc:
            self.emit(ev.PreflightIssue(node=main.label, check="model", message=exc.message,
                                        fix=exc.fix, fatal=True))
            return False
        except (OSError, ValueError, KeyError) as exc:
            self.emit(ev.Notice(node=main.label, message=f"no memory plan ({exc}); the load "
                      f"is not checked before it starts"))
            return True
        for message, fix in plan.warnings:
            self.emit(ev.PreflightIssue(node=main.label, check="plan", message=message,
                      fix=fix, fatal=False))
        self._emit_plan(plan)
        if plan.fits:
            return True
        over = [r for r in plan.rows if not r["fits"]]
        what = "; ".join(f"{r['device']} on {r['node']} needs {r['need_mib']:.0f} MiB, has "
                         f"{r['free_mib']:.0f} MiB free (headroom {plan.headroom_mib:g})"
                         for r in over)
        fix = (f"rpctui plan --apply {self.profile.path} writes a split that fits "
               f"(tensor_split = {plan.suggested_split})" if plan.suggested_fits else
               "the model does not fit on these devices with any split: add a server, free "
               "memory, or lower headroom_mib")
        self.emit(ev.PreflightIssue(node=over[0]["node"], check="plan",
                                    message=f"the memory plan does not fit: {what}",
                                    fix=fix + "; or run with --force", fatal=not self.force))
        return self.force

    def _emit_plan(self, plan: Plan) -> None:
        self.emit(ev.BufferPlanned(flavour=plan.flavour, n_ctx=plan.n_ctx,
                  headroom_mib=plan.headroom_mib,
                  rows=tuple(ev.PlannedRow(r["device"], r["node"], r["model_mib"], r["kv_mib"],
                                           r["free_mib"] or 0.0, r["fits"]) for r in plan.rows
                             if r["scope"] == "device"),
                  compute=tuple((d, round(mib, 2)) for d, mib in
                                sorted(plan.placement.mib("compute").items()))))

    async def _replan(self, job: JobSettings) -> None:
        """A sweep or tuner step with other job settings: the plan its buffers are checked
        against is made again for them."""
        if job == self.planned_job or self.monitor is None or self.monitor.plan is None:
            return
        self.planned_job = job
        plan = await self.plan_for(job)
        if plan is not None:
            self._emit_plan(plan)

    async def plan_for(self, job: JobSettings) -> Plan | None:
        """The plan of the profile with these job settings (a sweep's step), or None where
        it cannot be made."""
        try:
            return make_plan(dataclasses.replace(self.profile, job=job), self.caps,
                             await self.model_header())
        except (OSError, ValueError, KeyError, UserError):
            return None

    def _make_monitor(self) -> Monitor:
        endpoints: dict[str, str] = {}
        devices: dict[str, list[str]] = {}
        for node, server in self.profile.servers():
            ep = endpoint(node, server)
            endpoints[ep] = node.label
            caps = self.caps.get(node.label)
            default = [caps.devices[0].name] if caps and caps.devices else []
            devices[ep] = list(server.devices) or default
        budgets = {endpoint(n, s): float(s.memory_mib) for n, s in self.profile.servers()
                   if s.memory_mib}
        return Monitor(endpoints, devices, budgets, main=self.profile.main_node.label,
                       warn_pct=self.profile.warn_memory_pct,
                       headroom_mib=self.profile.headroom_mib)

    async def start_sampling(self) -> None:
        """One sampler per node, started in parallel; a node without one still runs."""
        async def one(node: Node) -> None:
            sampler = Sampler(node.label, self.hosts[node.label], node.python,
                              self.profile.sample_interval_s, self.publish, self.now,
                              threads=self.breakdown)
            await sampler.start()
            self.samplers[node.label] = sampler
            if sampler.spawned is not None:
                self.started.append(Started(node.label, "sampler", sampler.spawned, sampler.pid))
            if sampler.pid is None:
                why = sampler.errors.strip().splitlines()[-1:] or ["no answer"]
                self.emit(ev.Notice(node=node.label, message=f"node {node.label}: the sampler "
                          f"did not start ({why[0]}); no live memory or network readings there"))

        await asyncio.gather(*(one(n) for n in self.profile.nodes))

    # -- servers --------------------------------------------------------------------------------

    async def start_servers(self) -> None:
        """Start every server in parallel; return when all accept connections (through their
        SSH forwards, for nodes with transport "ssh")."""
        await processes.start_servers(self)

    # -- the job --------------------------------------------------------------------------------

    async def run_job(self, step: int, n_servers: int, setup: SweepStep | None = None) -> int:
        main = self.profile.main_node
        caps = self.caps[main.label]
        servers = self.profile.servers()[:n_servers]
        eps = [endpoint(n, s) for n, s in servers]
        names = {f"{n.label}:{s.port}": endpoint(n, s) for n, s in self.profile.servers()}
        job_settings = setup.job if setup is not None else self.profile.job
        await self._replan(job_settings)
        argv = largv.job_argv(caps, job_settings, self.model, eps, names,
                              progress=self.breakdown)
        env = {"GGML_NO_BACKTRACE": "1", "LLAMA_ARG_FIT": "off", **main.env}
        full = launcher_argv(argv, env=env, stdbuf=caps.has_stdbuf)
        self.emit(ev.JobStarted(node=main.label, kind=self.profile.job.kind, argv=tuple(argv),
                  step=step, servers=tuple(eps), setup=setup.name if setup else ""))
        spawned = await self.hosts[main.label].spawn(full, merge_stderr=False)
        self.started.append(Started(main.label, "job", spawned, spawned.pgid))
        if self.breakdown and "--progress" in argv:
            self.tokens = TokenProfiler(step, {endpoint(n, s): n.label for n, s in servers},
                                        self.samplers, self.links, self.emit)
        job = Job(self, spawned, step, n_servers)
        try:
            return await job.run(self.profile.job.timeout_s)
        finally:
            if self.tokens is not None:
                try:
                    await self.tokens.finish()  # it still sees the readings that close it
                finally:
                    self.tokens = None

    # -- the command API both faces use --------------------------------------------------------

    async def connect(self) -> bool:
        """Connect, probe and run the preflight once; whether it passed."""
        if self.prepared is None:
            self.prepared = await self.prepare()
        return self.prepared

    @property
    def breakdown(self) -> bool:
        """Whether bench steps measure where each token's time goes (it needs the samplers)."""
        return (self.profile.breakdown and self.profile.job.kind == "bench"
                and self.profile.sample_interval_s > 0 and bool(self.profile.servers()))

    async def start(self) -> None:
        """The link test (for the breakdown), the samplers (where the profile samples) and
        every rpc-server, once."""
        if self.servers_started:
            return
        if self.breakdown and not self.links:
            measured = await measure_links(self.profile, self.hosts, self.caps, self.emit,
                                           self.profile.link_test_s, pings=30)
            self.links.update((m.node, m) for m in measured)
        if self.profile.sample_interval_s > 0:
            await self.start_sampling()
        await self.start_servers()
        self.servers_started = True
        from rpctui.engine.cachefill import fill_caches

        await fill_caches(self)

    async def restart_servers(self, settings: dict[str, Any]) -> None:
        """Stop every rpc-server and start them again with these settings (a sweep step's)."""
        await processes.restart_servers(self, settings)

    async def run_jobs(self) -> ExitCode:
        """The job, or each step of the sweep until one fails; a server job is supervised
        (engine/serve.py) until the user stops it."""
        if self.profile.job.kind == "server":
            from rpctui.engine.serve import supervise

            return await supervise(self)
        from rpctui.engine.cachefill import after_job, cache_marks

        steps = self.profile.sweep_plan()
        self.jobs_running = True
        try:
            for step, (n, setup) in enumerate(steps):
                if any(getattr(s, k) != v for _, s in self.profile.servers()
                       for k, v in setup.servers.items()):
                    await self.restart_servers(setup.servers)
                marks = await cache_marks(self) if n else {}
                rc = await self.run_job(step, n, setup)
                await self.settle()
                if n and rc == 0:  # after a failure the next fill prunes, and a lost node
                    # has nothing to say; the plan knows every server's weights, a step over
                    # fewer servers, not
                    await after_job(self, marks, setup.job if n == len(self.profile.servers())
                                    else None)
                if rc != 0 and n == 0 and len(steps) > 1:
                    # The local baseline: a model too big for the main node alone is why one
                    # uses RPC. The steps with servers still run, without ratios.
                    self.emit(ev.Notice(node=self.profile.main_node.label, message=(
                        "the local baseline (0 servers) failed: the model may not fit on the "
                        "main node alone; the other steps run without ratios to it")))
                    continue
                if rc != 0:
                    return ExitCode.FAILED
            return ExitCode.OK
        finally:
            self.jobs_running = False

    async def test_links(self, seconds: float = 2.0, pings: int = 50) -> list[ev.LinkMeasured]:
        """The link test (engine/links.py) for every server node; connects first if needed.
        Run it before the servers start: while one holds its port, the test takes another."""
        if not await self.connect_nodes():
            return []
        measured = await measure_links(self.profile, self.hosts, self.caps, self.emit, seconds,
                                       pings)
        self.links.update((m.node, m) for m in measured)
        return measured

    async def run_links(self, seconds: float = 2.0, pings: int = 50) -> list[ev.LinkMeasured]:
        """The link test headless: connect, test, close (nothing is started)."""
        try:
            return await self.test_links(seconds, pings)
        finally:
            await asyncio.shield(self.teardown())

    async def tune(self, budget_s: float, out_path: Path | None = None) -> ExitCode:
        """``rpctui tune`` (engine/tune.py), headless: connect, search, write, tear down."""
        from rpctui.engine.tune import tune

        try:
            if not await self.connect():
                return ExitCode.PREFLIGHT
            return await tune(self, budget_s, out_path)
        finally:
            await asyncio.shield(self.teardown())

    async def stop_job(self) -> None:
        """The user's stop: end the running job (the servers stay up); a server job is not
        restarted after it."""
        self.stop_asked = True
        await self.end_job()

    async def end_job(self) -> None:
        """End the running job's process (the servers stay up)."""
        main = self.profile.main_node.label
        pgids = [s.pgid for s in self.started if s.what == "job" and s.pgid]
        if pgids and main in self.hosts:
            await self.hosts[main].kill_groups(pgids)

    @property
    def busy(self) -> bool:
        """Whether anything rpctui started may still be running."""
        return bool(self.started) and not self.stopping

    async def model_header(self) -> ModelInfo:
        """The model's GGUF header, read on the main node once (after connect()); a header
        that cannot be read is a UserError naming the file."""
        from rpctui.plan.gguf import ModelFileError

        if self.model_info is None:
            main = self.profile.main_node
            try:
                self.model_info = await load_model_info(self.profile, self.model,
                                                        self.hosts[main.label])
            except ModelFileError as exc:
                raise UserError(f"model on {main.label}: {exc}", MODEL_DAMAGED_FIX,
                                ExitCode.PREFLIGHT) from exc
        return self.model_info

    async def make_plan(self, experts_on: list[str] | None = None) -> Plan:
        """The memory plan for this profile on the probed nodes (after connect())."""
        return make_plan(self.profile, self.caps, await self.model_header(),
                         experts_on=experts_on)

    async def run(self, check_only: bool = False) -> ExitCode:
        """The whole run, headless. Teardown happens whatever way this ends."""
        try:
            if not await self.connect():
                return ExitCode.PREFLIGHT
            if check_only:
                return ExitCode.OK
            await self.start()
            return await self.run_jobs()
        finally:
            await asyncio.shield(self.teardown())

    async def settle(self, timeout_s: float = 1.0) -> None:
        """Let the samplers count the bytes of a load that ended just before the job did."""
        if self.monitor is None or not self.monitor.pending() or not self.samplers:
            return
        await asyncio.sleep(SETTLE_S)
        for sampler in self.samplers.values():
            await sampler.sample_now()
        deadline = time.monotonic() + timeout_s
        while self.monitor.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def teardown(self) -> None:
        """End every process group started, on every node, and verify they are gone."""
        await processes.teardown(self)
