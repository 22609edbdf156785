"""The headless face: ``rpctui run`` and ``rpctui check``.

stdout carries data only (the results table, JSON, CSV, the preflight table);
progress and diagnostics go to stderr, one plain line per event worth telling.
Every event is recorded to the run's JSONL and folded into the same
ClusterState the app draws.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rpctui.engine.orchestrator import Orchestrator
from rpctui.errors import ExitCode, UserError
from rpctui.history.recorder import Recorder
from rpctui.history.store import FORMATS, new_run_id, result_rows
from rpctui.profile.schema import Profile
from rpctui.profiler.breakdown import render as render_breakdown
from rpctui.run import events as ev
from rpctui.run.report import final_report, human_bytes, status_lines
from rpctui.run.state import ClusterState, fold

if TYPE_CHECKING:
    from rpctui.plan.plan import Plan


class Printer:
    """Turns events into short stderr lines."""

    def __init__(self, out: TextIO, verbose: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self.seen_buffers: set[tuple[int, str, str, str]] = set()

    def __call__(self, e: ev.Event) -> None:
        line = self.describe(e)
        if line:
            print(line, file=self.out, flush=True)

    def describe(self, e: ev.Event) -> str:  # noqa: C901 - one line per event type
        match e:
            case ev.RunStarted():
                return f"rpctui: {e.command} {e.profile} ({len(e.nodes)} nodes, {len(e.servers)} servers)"
            case ev.NodeFailed():
                return f"error: {e.message}\n  fix: {e.fix}" if e.fix else f"error: {e.message}"
            case ev.NodeProbed():
                devs = ", ".join(f"{d.name} {d.free_mib}/{d.total_mib} MiB free" if d.total_mib else d.name
                                 for d in e.devices) or "no server"
                proto = f", RPC {e.protocol}" if e.protocol else ""
                return f"node {e.node}: {e.flavour} build {e.build}{proto}; {devs}"
            case ev.PreflightIssue():
                head = "error" if e.fatal else "warning"
                return f"{head}: {e.message}" + (f"\n  fix: {e.fix}" if e.fix else "")
            case ev.Notice():
                return f"note: {e.message}"
            case ev.ServiceStatus():
                return f"service {e.state}: {e.message}"
            case ev.ModelPush():
                return _push_line(e)
            case ev.BuildProgress() if e.total:
                return f"build {e.node}: {e.message}: step {e.step}/{e.total}"
            case ev.BuildProgress():
                return f"build {e.node}: {e.message}"
            case ev.Finding():
                mark = "ok  " if e.ok else "FAIL"
                return (f"{mark} {e.check:10s} {e.node:8s} {e.message}"
                        + (f"\n  fix: {e.fix}" if e.fix and not e.ok else ""))
            case ev.NodeBuilt():
                rec = dict(e.record)
                took = f" in {e.seconds:.0f} s" if e.seconds else ""
                proto = f", RPC protocol {rec['protocol']}" if rec.get("protocol") else ""
                return (f"build {e.node}: {e.flavour} {e.how}{took}: build {rec.get('number')} "
                        f"({rec.get('commit')}) for {e.backend}{proto}, {rec.get('compiler')}, "
                        f"{rec.get('arch')} {rec.get('libc')}; in {e.message}")
            case ev.CacheFilled() if e.message.startswith("after the job"):
                return (f"cache {e.endpoint} on {e.node}: {e.cache_bytes / 2**20:.0f} MiB after "
                        f"the job" + (f", {e.pruned_bytes / 2**20:.0f} MiB pruned to its limit"
                                      if e.pruned_bytes else ""))
            case ev.CacheUsed():
                files = "file" if e.written == 1 else "files"
                wrote = (f"wrote {e.written} {files} ({e.written_bytes / 2**20:.0f} MiB)"
                         if e.written else "wrote nothing")
                if e.weights > 0:
                    found = (f"the load found {e.found} of {e.weights} weights there "
                             f"({100 * e.found / e.weights:.0f} %), {wrote}")
                elif e.weights == 0:
                    found = f"the load sent it no weight above the 10 MiB threshold, {wrote}"
                else:
                    found = f"the load {wrote}"
                return (f"cache {', '.join(e.endpoints)} on {e.node}: {found}; "
                        f"{e.cache_bytes / 2**20:.0f} MiB in the cache")
            case ev.CacheFilled():
                pruned = (f", {e.pruned_bytes / 2**20:.0f} MiB pruned to its limit"
                          if e.pruned_bytes else "")
                return (f"cache {e.endpoint} on {e.node}: {e.present} of {e.tensors} tensors "
                        f"were there, {e.filled} filled ({e.bytes / 2**20:.0f} MiB in "
                        f"{e.seconds:.1f} s); {e.cache_bytes / 2**20:.0f} MiB in the cache"
                        f"{pruned} ({e.message})")
            case ev.ServerReady():
                return f"server {e.endpoint} on {e.node}: ready after {e.elapsed_s:.2f} s"
            case ev.ServerStarting() if e.transport == "ssh":
                return (f"server {e.endpoint} on {e.node}: bound to 127.0.0.1 there, reached "
                        f"through SSH")
            case ev.ServerExited() if not e.expected:
                tail = "\n    ".join(line for line in e.tail[-6:] if line.strip())
                return f"server {e.endpoint} on {e.node} exited with code {e.rc}" + (
                    f"; last lines:\n    {tail}" if tail else "")
            case ev.JobStarted():
                return (f"job on {e.node} with {len(e.servers)} servers: "
                        f"{' '.join(e.argv)}")
            case ev.BufferAllocated():
                key = (e.step, e.kind, e.device, e.cache)
                if key in self.seen_buffers and not self.verbose:
                    return ""  # llama-bench allocates KV and compute again for every test
                self.seen_buffers.add(key)
                cache = f" ({e.cache} cache)" if e.cache else ""
                return f"  {e.kind} buffer {e.device}{cache}: {e.mib:.2f} MiB"
            case ev.BenchResult():
                r = e.row
                from rpctui.llama.bench import bench_label
                return f"  {bench_label(r)}: {r.get('avg_ts', 0):.2f} t/s"
            case ev.JobOutput():
                return f"  | {e.text}" if self.verbose else ""
            case ev.JobLog() | ev.ServerLog():
                return f"  . {e.line}" if self.verbose else ""
            case ev.JobFinished():
                if e.rc == 0 and not e.diagnosis:
                    return f"job finished in {e.elapsed_s:.2f} s"
                return f"error: job failed (exit {e.rc}): {e.diagnosis}"
            case ev.OomRisk():
                return f"warning: {e.message}"
            case ev.LoadFinished():
                return (f"server {e.endpoint} on {e.node}: {e.expected_bytes / 2**20:.2f} MiB "
                        f"loaded in {e.seconds:.2f} s ({human_bytes(e.moved_bytes)} over the "
                        f"network)")
            case ev.LinkMeasured():
                if e.rtt_ms is None:
                    return f"link {e.main} -> {e.node}: not measured ({e.note})"
                rates = (f", {e.to_mbps:.0f} Mb/s to, {e.from_mbps:.0f} Mb/s from"
                         if e.to_mbps is not None and e.from_mbps is not None else "")
                return f"link {e.main} -> {e.node} ({e.endpoint}): rtt {e.rtt_ms:.3f} ms{rates}"
            case ev.LinksAssessed():
                return "\n".join(f"warning: link to {node}: {text}" for node, text in e.flags)
            case ev.TokenBreakdown():
                return "\n".join(render_breakdown([e]))
            case ev.TeardownFailed():
                return f"error: teardown on {e.node}: {e.message}"
            case ev.TeardownDone():
                return f"teardown: every process ended ({e.elapsed_s:.2f} s)"
        return ""


class LiveStatus:
    """A status block at the bottom of a terminal, redrawn at most 4 times a second; event
    lines scroll above it. Not used when stderr is not a terminal."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.shown = 0
        self.last = 0.0

    def clear(self) -> None:
        if self.shown:
            self.out.write(f"\x1b[{self.shown}F\x1b[J")
            self.shown = 0

    def draw(self, state: ClusterState, force: bool = False) -> None:
        import time

        now = time.monotonic()
        if not force and now - self.last < 0.25:
            return
        self.last = now
        self.clear()
        lines = status_lines(state)
        self.out.write("".join(line + "\n" for line in lines))
        self.out.flush()
        self.shown = len(lines)


class Session:
    """One headless run: recorder + state + printer behind a single emit()."""

    def __init__(self, profile: Profile, command: str, err: TextIO, verbose: bool = False,
                 record: bool = True) -> None:
        self.profile = profile
        self.state = ClusterState()
        self.run_id = new_run_id(profile.name or Path(profile.path).stem)
        self.recorder = Recorder(self.run_id) if record else None
        self.printer = Printer(err, verbose)
        self.err = err
        self.live = LiveStatus(err) if err.isatty() else None
        self.emit(ev.run_started(profile, self.run_id, command))

    def emit(self, e: ev.Event) -> None:
        if self.recorder and (problem := self.recorder.write(e)):
            print(f"warning: {problem}", file=self.err)
        self.state = fold(self.state, e)
        if self.live is not None:
            line = self.printer.describe(e)
            if line:
                self.live.clear()
                print(line, file=self.err)
                self.live.draw(self.state, force=True)
            elif isinstance(e, (ev.NodeSample, ev.LoadProgress)):
                self.live.draw(self.state)
        else:
            self.printer(e)

    def build_progress(self, message: str, fraction: float | None) -> None:
        pct = f" {fraction * 100:3.0f}%" if fraction is not None else ""
        if self.err.isatty():
            print(f"\r\x1b[K{message}{pct}", end="", file=self.err, flush=True)
            if fraction == 1.0:
                print(file=self.err)
        elif fraction is None or fraction == 1.0 or int(fraction * 100) % 10 == 0:
            print(f"{message}{pct}", file=self.err, flush=True)

    def finish(self, code: ExitCode, message: str = "") -> None:
        self.emit(ev.RunFinished(t=self.state.t, exit_code=int(code), message=message))
        if self.live is not None:
            self.live.clear()
        for line in final_report(self.state):
            print(line, file=self.err)
        if self.recorder:
            problem = self.recorder.close(self.state)
            partly = "partly " if self.recorder.failed else ""
            print(f"run {partly}recorded in {self.recorder.path}", file=self.err)
            if problem:
                print(f"warning: {problem}", file=self.err)


async def _with_signals(coro_factory: Callable[[], Awaitable[ExitCode]]) -> ExitCode:
    """Run the orchestrator so that Ctrl-C and SIGTERM cancel it (its teardown still runs)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro_factory())
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return ExitCode.INTERRUPTED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _finished(session: Session, work: Callable[[], Awaitable[ExitCode]],
              stderr: TextIO) -> ExitCode:
    """Run a recorded session's work to its end (Ctrl-C and SIGTERM included); its exit code,
    with the error said and the session closed."""
    message = ""
    try:
        code = asyncio.run(_with_signals(work))
    except UserError as exc:
        print(f"error: {exc.message}" + (f"\n  fix: {exc.fix}" if exc.fix else ""), file=stderr)
        code, message = exc.code, exc.message
    if code == ExitCode.INTERRUPTED:
        print("interrupted: every process rpctui started was ended", file=stderr)
    session.finish(code, message)
    return code


def run_headless(profile: Profile, fmt: str = "md", out_file: str | None = None,
                 check_only: bool = False, verbose: bool = False, force: bool = False,
                 stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr,
                 metrics: str | None = None, metrics_hold: float = 0.0,
                 command: str = "run") -> ExitCode:
    """``rpctui run`` / ``rpctui check`` / ``rpctui serve``: returns the exit code."""
    stop_metrics = None
    sessions: list[Session] = []
    if metrics:  # before the run starts: a port in use is refused with nothing started
        from rpctui.engine.metrics import serve

        stop_metrics = serve(metrics, lambda: sessions[0].state if sessions else ClusterState())
        print(f"metrics served on http://{metrics if ':' in metrics else '127.0.0.1:' + metrics}"
              "/metrics", file=stderr)
    session = Session(profile, "check" if check_only else command, stderr, verbose)
    sessions.append(session)
    orch = Orchestrator(profile, session.emit, build_progress=session.build_progress,
                        force=force)
    code = _finished(session, lambda: orch.run(check_only=check_only), stderr)
    state = session.state
    if check_only:
        text = preflight_table(state) if fmt != "json" else json.dumps(
            preflight_rows(state), indent=1) + "\n"
        verdict = "PASS" if code == ExitCode.OK else "FAIL"
        print(f"preflight: {verdict}", file=stderr)
    else:
        rows = result_rows(state)
        text = FORMATS[fmt](rows) if rows or fmt != "md" else ""
    if text:
        stdout.write(text)
        stdout.flush()
    if out_file and text:
        Path(out_file).write_text(text)
    if stop_metrics is not None:
        if metrics_hold > 0:
            print(f"metrics: served {metrics_hold:g} s more for a last scrape", file=stderr)
            try:
                time.sleep(metrics_hold)
            except KeyboardInterrupt:
                pass
        stop_metrics()
    return code


def doctor_headless(profile: Profile, fix: bool = False,
                    stderr: TextIO = sys.stderr) -> ExitCode:
    """``rpctui doctor``: the preflight and the doctor's own checks, each with its fix."""
    from rpctui.engine.doctor import doctor

    session = Session(profile, "doctor", stderr, record=False)
    orch = Orchestrator(profile, session.emit, build_progress=session.build_progress)
    code = _finished(session, lambda: doctor(orch, fix), stderr)
    print("doctor: " + ("all well" if code == ExitCode.OK else "see the findings above"),
          file=stderr)
    return code


def build_headless(profile: Profile, stderr: TextIO = sys.stderr) -> ExitCode:
    """``rpctui build PROFILE``: llama.cpp on every node that says build = FLAVOUR."""
    session = Session(profile, "build", stderr, record=False)
    orch = Orchestrator(profile, session.emit)
    return _finished(session, orch.build_nodes, stderr)


def push_headless(profile: Profile, verify: bool = False,
                  stderr: TextIO = sys.stderr) -> ExitCode:
    """``rpctui models push``: the model onto the nodes that need it."""
    session = Session(profile, "models push", stderr, record=False)
    failed: list[ev.ModelPush] = []

    def emit(e: ev.Event) -> None:
        if isinstance(e, ev.ModelPush) and e.state == "failed":
            failed.append(e)
        session.emit(e)

    orch = Orchestrator(profile, emit)
    code = _finished(session, lambda: orch.push_models(verify), stderr)
    return ExitCode.FAILED if code == ExitCode.OK and failed else code


def _push_line(e: ev.ModelPush) -> str:
    size = f"{e.total_bytes / 2**20:.1f} MiB"
    if e.state == "checking":
        return ""
    if e.state == "sending" and e.done_bytes and e.rate_bytes_per_s:
        pct = 100 * e.done_bytes / max(e.total_bytes, 1)
        return (f"push {e.node}: {e.path} {pct:5.1f}% of {size} at "
                f"{e.rate_bytes_per_s / 1e6:.0f} MB/s ({e.how})")
    if e.state == "sending":
        return f"push {e.node}: {e.path} ({size}) sending" + (f": {e.message}" if e.message else "")
    if e.state == "sent":
        return (f"push {e.node}: {e.path} sent, {size} at {e.rate_bytes_per_s / 1e6:.0f} MB/s "
                f"({e.how}), {e.message}")
    if e.state == "skipped":
        return f"push {e.node}: {e.path} skipped: {e.message}"
    return f"error: push {e.node}: {e.path}: {e.message}"


def plan_headless(profile: Profile, as_json: bool = False, apply: bool = False,
                  experts_on: list[str] | None = None,
                  stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> ExitCode:
    """``rpctui plan``: probe (nothing is loaded or started), predict, suggest, maybe apply."""
    from rpctui.plan.plan import render
    from rpctui.profile.load import load_document, save_document, set_value

    session = Session(profile, "plan", stderr, record=False)
    orch = Orchestrator(profile, session.emit, build_progress=session.build_progress)

    async def go() -> Plan | None:
        try:
            await orch.connect()
            if any(n.status == "failed" for n in session.state.nodes.values()) or any(
                    i.fatal and i.check == "model" for i in session.state.issues):
                return None  # the session has shown why
            return await orch.make_plan(experts_on)
        finally:
            await orch.teardown()

    try:
        plan = asyncio.run(go())
    except UserError as exc:
        print(f"error: {exc.message}" + (f"\n  fix: {exc.fix}" if exc.fix else ""), file=stderr)
        return exc.code
    if plan is None:
        return ExitCode.PREFLIGHT
    stdout.write(json.dumps(plan.to_dict(), indent=1) + "\n" if as_json else render(plan))
    if apply and plan.suggested_overrides:
        import tomlkit

        doc = load_document(profile.path)
        rules = tomlkit.array()
        for pattern, server in plan.suggested_overrides:
            rule = tomlkit.inline_table()
            rule.update({"pattern": pattern, "server": server})
            rules.append(rule)
        set_value(doc, ("job", "override_tensors"), rules)
        save_document(doc, profile.path)
        print(f"wrote {len(rules)} override_tensors rules into {profile.path}", file=stderr)
    elif apply and plan.suggested_split:
        doc = load_document(profile.path)
        set_value(doc, ("job", "tensor_split"), plan.suggested_split)
        save_document(doc, profile.path)
        print(f"wrote tensor_split = {plan.suggested_split} into {profile.path}", file=stderr)
    return ExitCode.OK if plan.fits or (apply and plan.suggested_fits) else ExitCode.FAILED


def preflight_rows(state: ClusterState) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, node in state.nodes.items():
        issues = [i for i in state.issues if i.node == name or (not i.node)]
        fatal = [i for i in issues if i.fatal]
        ports = [i for i in issues if i.node == name and i.check == "port"]
        model = [i for i in issues if i.node == name and i.check == "model"]
        rows.append({
            "node": name,
            "reachable": "no" if node.status == "failed" else "yes",
            "build": f"{node.flavour} {node.build}".strip() if node.build else "",
            "rpc": node.protocol,
            "devices": "; ".join(f"{d.name} {d.free_mib}/{d.total_mib} MiB" if d.total_mib is not None
                                 else d.name
                                 for d in node.devices),
            "ports": "in use" if ports else ("free" if node.status == "probed" else ""),
            "model": ("missing" if any("not found" in i.message for i in model) else "damaged")
            if model else ("ok" if name == state.main and node.status == "probed" else ""),
            "verdict": "FAIL" if node.status == "failed" or any(i.node == name for i in fatal)
            else "ok",
            "problems": [i.message for i in issues if i.node == name] + (
                [node.message] if node.message else []),
        })
    return rows


def preflight_table(state: ClusterState) -> str:
    rows = preflight_rows(state)
    cols = ["node", "reachable", "build", "rpc", "devices", "ports", "model", "verdict"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in cols}
    lines = ["| " + " | ".join(c.ljust(widths[c]) for c in cols) + " |",
             "| " + " | ".join("-" * widths[c] for c in cols) + " |"]
    lines += ["| " + " | ".join(str(r[c]).ljust(widths[c]) for c in cols) + " |" for r in rows]
    general = [i for i in state.issues if not i.node]
    for issue in general:
        lines.append(("error: " if issue.fatal else "warning: ") + issue.message)
    return "\n".join(lines) + "\n"


def links_headless(profile: Profile, fmt: str = "md", seconds: float = 2.0, pings: int = 50,
                   stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> ExitCode:
    """``rpctui links``: the main node against every server node; nothing else is started."""
    from rpctui.profiler.links import render

    session = Session(profile, "links", stderr, record=False)
    orch = Orchestrator(profile, session.emit, build_progress=session.build_progress)
    try:
        links = asyncio.run(_with_signals(lambda: _links(orch, seconds, pings)))
    except UserError as exc:
        print(f"error: {exc.message}" + (f"\n  fix: {exc.fix}" if exc.fix else ""), file=stderr)
        return exc.code
    if links == ExitCode.INTERRUPTED:
        return ExitCode.INTERRUPTED
    state = session.state
    if any(n.status == "failed" for n in state.nodes.values()):
        return ExitCode.PREFLIGHT
    measured = list(state.links.values())
    if not measured:
        print("error: no node of this profile runs an rpc-server: there is no link to test",
              file=stderr)
        print("  fix: add [[nodes.servers]] to a node", file=stderr)
        return ExitCode.USAGE
    if fmt == "json":
        stdout.write(json.dumps({"links": [m.to_dict() for m in measured],
                                 "flags": [{"node": n, "problem": t}
                                           for n, t in state.link_flags]}, indent=1) + "\n")
    else:
        stdout.write(render(measured, state.link_flags))
    failed = any(m.rtt_ms is None for m in measured)
    return ExitCode.FAILED if failed else ExitCode.OK


async def _links(orch: Orchestrator, seconds: float, pings: int) -> ExitCode:
    await orch.run_links(seconds, pings)
    return ExitCode.OK


def tune_headless(profile: Profile, budget_min: float, out: str | None,
                  stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> ExitCode:
    """``rpctui tune``: one recorded run whose steps are the setups tried."""
    from rpctui.profiler.tune import render

    if profile.job.kind != "bench":
        raise UserError("rpctui tune benches setups: it needs job.kind = \"bench\"",
                        "set kind = \"bench\" in [job] (a copy of the profile will do)")
    out_path = Path(out) if out else Path(profile.path).with_suffix(".tuned.toml")
    session = Session(profile, "tune", stderr)
    orch = Orchestrator(profile, session.emit, build_progress=session.build_progress)
    code = _finished(session, lambda: orch.tune(budget_min * 60, out_path), stderr)
    if session.state.tuned is not None:
        stdout.write(render(session.state.tuned))
    return code
