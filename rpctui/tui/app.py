"""The app: the same events, folded into the same ClusterState as the headless run, drawn.

Live, the Orchestrator runs in a worker on the app's own event loop and reports through
``post_event``; a replay feeds a recorded run's events at their recorded pace. Views are
redrawn at most twice a second from the latest state, so a burst of samples costs one
redraw, not one per sample.
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Header, Tab, Tabs

from rpctui.engine.orchestrator import Orchestrator
from rpctui.errors import UserError
from rpctui.history.recorder import Recorder
from rpctui.history.store import new_run_id, read_run
from rpctui.paths import shipped_dir
from rpctui.profile.schema import Profile
from rpctui.run import events as ev
from rpctui.run.state import ClusterState, fold
from rpctui.tui.screens import ConfirmStop, EditorScreen, ExamplePicker, MainScreen, NodeScreen, RunsScreen
from rpctui.tui.themes import load_themes, remember_theme, remembered_theme
from rpctui.tui.widgets import ClusterView, JobView, KeyBar, NodeCard

REDRAW_S = 0.5  # samples arrive at 2 Hz: drawing more often shows nothing new


class RpcTuiApp(App[int]):
    CSS_PATH = "rpctui.tcss"
    TITLE = "rpctui"
    BINDINGS = [
        Binding("c", "connect", "Connect"),
        Binding("s", "start_servers", "Start servers"),
        Binding("r", "run_job", "Run job"),
        Binding("x", "stop_job", "Stop job"),
        Binding("k", "stop_cluster", "Stop cluster"),
        Binding("t", "test_links", "Test links"),
        Binding("g", "show_cluster", "Cluster"),
        Binding("l", "show_log", "Log"),
        Binding("n", "node_detail", "Node"),
        Binding("u", "runs", "Runs"),
        Binding("e", "edit_profile", "Edit profile"),
        Binding("q", "quit_app", "Quit"),
    ]

    def __init__(self, profile: Profile | None = None, replay: Path | None = None,
                 replay_speed: float = 1.0, record: bool = True,
                 replay_events: list[ev.Event] | None = None, metrics: str | None = None) -> None:
        super().__init__()
        self.metrics = metrics  #: HOST:PORT to serve the state as Prometheus metrics
        self._stop_metrics: Callable[[], None] | None = None
        self.profile = profile
        self.replay_path = replay
        self.replay_speed = replay_speed
        self.replay_events = replay_events  #: already read (the command line checks them first)
        self.state = ClusterState()
        self.orch: Orchestrator | None = None
        self.recorder: Recorder | None = None
        self.record = record
        # Lines not yet shown: only the latest screenful matters when the log tab opens.
        self.pending_log: deque[str] = deque(maxlen=120)
        self.all_log: deque[str] = deque(maxlen=20000)
        self.dirty = True

    # What the engine and the state say; the app keeps no copy of its own.
    @property
    def connected(self) -> bool:
        return self.orch is not None and bool(self.orch.prepared) and not self.orch.stopping

    @property
    def servers_up(self) -> bool:
        return self.connected and bool(self.state.servers) and all(
            s.status == "ready" for s in self.state.servers.values())

    @property
    def job_running(self) -> bool:
        return self.orch is not None and self.orch.jobs_running

    # -- layout -------------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[Any]:
        return MainScreen(id="_default")

    def compose(self) -> ComposeResult:
        # The views are kept by reference: other screens (runs, editor, node) may be on top,
        # and a query would search those instead of the main screen.
        self.cluster_view = ClusterView()
        self.job_view = JobView()
        # A tab bar over two views, one displayed at a time, rather than a TabbedContent: its
        # three container layers are each painted in full on a switch (Textual composes every
        # layer), and a switch cost a third more with them.
        self.tabs = Tabs(Tab("Cluster", id="cluster-tab"), Tab("Job", id="job-tab"))
        yield Header()
        yield self.tabs
        yield self.cluster_view
        self.job_view.display = False
        yield self.job_view
        yield KeyBar()

    def on_mount(self) -> None:
        for theme in load_themes():
            self.register_theme(theme)
        name = remembered_theme()
        if name in self.available_themes:
            self.theme = name
        self.set_interval(REDRAW_S, self.redraw)
        if self.metrics:
            from rpctui.engine.metrics import serve  # prometheus_client: only when asked for

            try:
                self._stop_metrics = serve(self.metrics, lambda: self.state)
                self.notify(f"metrics on http://{self.metrics}/metrics", title="metrics")
            except UserError as exc:
                self.notify(f"{exc.message}\nfix: {exc.fix}", title="metrics", severity="error")
        # What exists once the first screen is up lives as long as the app: the collector
        # need not walk it again. A full collection over Textual's widgets and caches took
        # 85-105 ms here (a key pressed then waits for it); over what is made later, 25-30 ms.
        self.call_after_refresh(gc.freeze)
        if self.replay_path is not None:
            self.sub_title = f"replay of {self.replay_path.name}"
            self.replay_run(self.replay_path)
        elif self.profile is not None:
            self.sub_title = self.profile.name or self.profile.path
            self.start_session()
        else:
            self.sub_title = "no profile"
            self.notify("Open a profile with `rpctui PROFILE` (or `rpctui demo`); press e to "
                        "start one from an example, u for past runs.", title="rpctui",
                        timeout=20)

    def watch_theme(self, name: str) -> None:
        remember_theme(name)

    # -- events in, views out -------------------------------------------------------------------

    def post_event(self, e: ev.Event) -> None:
        """Everything that happens arrives here, live or replayed."""
        if self.recorder is not None and (problem := self.recorder.write(e)):
            self.notify(problem, title="run history", severity="warning")
        self.state = fold(self.state, e)
        self.dirty = True
        if isinstance(e, ev.JobLog):
            self.pending_log.append(f"[job] {e.line}")
            self.all_log.append(self.pending_log[-1])
        elif isinstance(e, ev.ServerLog):
            self.pending_log.append(f"[{e.node} {e.endpoint}] {e.line}")
            self.all_log.append(self.pending_log[-1])
        elif isinstance(e, ev.OomRisk):
            self.notify(e.message, title="memory", severity="warning", timeout=8)
        elif isinstance(e, ev.JobFinished) and e.rc != 0:
            self.notify(e.diagnosis or f"exit {e.rc}", title="job failed", severity="error",
                        timeout=15)
        elif isinstance(e, ev.NodeFailed):
            self.notify(f"{e.message}\nfix: {e.fix}", title="node failed", severity="error")

    def redraw(self) -> None:
        """Draw the visible tab from the latest state (hidden views catch up when shown)."""
        if (not self.dirty and not self.pending_log) or not self.tabs.is_mounted:
            return
        self.dirty = False
        if self.tabs.active == "cluster-tab":
            self.cluster_view.show(self.state)
            return
        job = self.job_view
        job.show(self.state)
        if self.pending_log:
            job.add_log(list(self.pending_log))
            self.pending_log.clear()

    def on_tabs_tab_activated(self, message: Tabs.TabActivated) -> None:
        # A tab clicked; a key switches through _show_tab, which activates the tab itself.
        tab = message.tab.id or "cluster-tab"
        if self.cluster_view.display != (tab == "cluster-tab"):
            self._show_tab(tab)

    def _show_tab(self, tab: str) -> None:
        if self.tabs.active != tab:
            self.tabs.active = tab
        self.cluster_view.display = tab == "cluster-tab"
        self.job_view.display = tab == "job-tab"
        # Show the tab at once, as last drawn; bring it up to date right after that paint.
        self.dirty = True
        self.call_after_refresh(self.redraw)

    # -- replay ---------------------------------------------------------------------------------

    @work(group="replay", exclusive=True, exit_on_error=False)
    async def replay_run(self, path: Path) -> None:
        try:
            events = self.replay_events or read_run(path)
        except UserError as exc:
            self.notify(f"{exc.message}\nfix: {exc.fix}", title="replay", severity="error")
            return
        self.replay_events = None
        gc.freeze()  # the recording is read once and kept: see on_mount
        last = 0.0
        for e in events:
            delay = (e.t - last) / self.replay_speed if self.replay_speed > 0 else 0
            if delay > 0:
                await asyncio.sleep(min(delay, 2.0))
            last = max(last, e.t)
            self.post_event(e)
        self.redraw()

    # -- live -----------------------------------------------------------------------------------

    def start_session(self) -> None:
        assert self.profile is not None
        run_id = new_run_id(self.profile.name or Path(self.profile.path).stem)
        if self.record:
            self.recorder = Recorder(run_id)
        self.orch = Orchestrator(self.profile, self.post_event)
        self.post_event(ev.run_started(self.profile, run_id, "app"))
        self.action_connect()

    @work(group="cluster", exclusive=False, exit_on_error=False)
    async def _step(self, what: str) -> None:
        orch = self.orch
        if orch is None or orch.stopping:
            return
        try:
            if not await orch.connect():
                self.notify("preflight failed: see the node cards", severity="error")
                return
            if what == "links":
                await orch.test_links()
            if what in ("servers", "job"):
                await orch.start()
            if what == "job" and not orch.jobs_running:
                await orch.run_jobs()
        except UserError as exc:
            self.notify(f"{exc.message}\nfix: {exc.fix}" if exc.fix else exc.message,
                        title="error", severity="error", timeout=15)

    def action_connect(self) -> None:
        self._step("connect")

    def action_start_servers(self) -> None:
        self._step("servers")

    def action_run_job(self) -> None:
        self._step("job")

    def action_test_links(self) -> None:
        """The link test; its table and flags show in the job tab."""
        self._step("links")
        self._show_tab("job-tab")

    async def action_stop_job(self) -> None:
        if self.orch is not None:
            await self.orch.stop_job()

    async def action_stop_cluster(self) -> None:
        if self.orch is not None:
            await self.orch.teardown()

    def action_show_log(self) -> None:
        self._show_tab("job-tab")

    def action_show_cluster(self) -> None:
        self._show_tab("cluster-tab")

    def action_node_detail(self, node: str | None = None) -> None:
        focused = self.focused
        name = node or getattr(focused, "node_name", None) or self.state.main or next(
            iter(self.state.nodes), None)
        if name is None or name not in self.state.nodes:
            self.notify("no node yet")
            return
        logs = [line for line in self.all_log if line.startswith(f"[{name} ")]
        self.push_screen(NodeScreen(self.state, name, logs))

    def on_node_card_selected(self, message: NodeCard.Selected) -> None:
        self.action_node_detail(message.node)

    def action_runs(self) -> None:
        def opened(path: Path | None) -> None:
            if path is not None and self.orch is None:
                self.state = ClusterState()
                self.cluster_view.reset()
                self.job_view.reset()
                self.replay_path = path
                self.sub_title = f"replay of {path.name}"
                self.replay_run(path)
            elif path is not None:
                self.notify("a live session is open: replays open from `rpctui replay RUN`")

        self.push_screen(RunsScreen(), opened)

    def action_edit_profile(self) -> None:
        if self.profile is not None and self.profile.path:
            self.push_screen(EditorScreen(Path(self.profile.path)))
            return

        examples = sorted(shipped_dir("examples").glob("*.toml"))

        def picked(example: Path | None) -> None:
            if example is not None:
                self.push_screen(EditorScreen(Path(f"my-{example.name}"), example.read_text()))

        self.push_screen(ExamplePicker(examples), picked)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, action, help_text in (("c", "connect", "Connect to every node"),
                                       ("s", "start_servers", "Start the rpc-servers"),
                                       ("r", "run_job", "Run the job"),
                                       ("x", "stop_job", "Stop the job"),
                                       ("k", "stop_cluster", "Stop the cluster (teardown)"),
                                       ("t", "test_links", "Test every server node's link"),
                                       ("l", "show_log", "Open the log"),
                                       ("u", "runs", "Past runs and comparisons"),
                                       ("e", "edit_profile", "Edit the profile"),
                                       ("q", "quit_app", "Quit")):
            yield SystemCommand(f"{help_text} ({key})", help_text,
                                lambda a=action: self.run_action(a))

    async def action_quit_app(self) -> None:
        if self.orch is None or not self.orch.busy:
            await self._finish()
            return

        async def decided(stop: bool | None) -> None:
            if stop:
                await self._finish()

        self.push_screen(ConfirmStop(), decided)

    async def on_unmount(self) -> None:
        """However the app ends (an error included), nothing it started is left running."""
        if self.orch is not None and not self.orch.stopping:
            await self.orch.teardown()
        if self._stop_metrics is not None:
            self._stop_metrics()

    async def _finish(self) -> None:
        if self.orch is not None:
            await self.orch.teardown()
        if self.recorder is not None:
            finished = ev.RunFinished(t=self.state.t, exit_code=0, message="app quit")
            self.recorder.write(finished)
            self.state = fold(self.state, finished)
            problem = self.recorder.close(self.state)
            if problem:
                self.notify(problem, title="run history", severity="warning")
        self.exit(0)
