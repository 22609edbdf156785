"""``rpctui tune``: bench the setups the planner says fit, briefly, then the best few again with
more repetitions; report the winner against the profile as written and write it as a profile.

Everything runs as the steps of one recorded run (each step's setup named), so the run history
holds the whole search. The choices are :mod:`rpctui.profiler.tune`'s; this module runs them.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rpctui.errors import ExitCode, UserError
from rpctui.llama.bench import bench_label
from rpctui.plan.plan import make_plan
from rpctui.profile.schema import Profile, SweepStep
from rpctui.profiler import tune as ptune
from rpctui.run import events as ev

if TYPE_CHECKING:
    from collections.abc import Callable

    from rpctui.llama.caps import Capabilities
    from rpctui.plan.gguf import ModelInfo


class Bench(Protocol):
    """What the tuner uses of the engine (the Orchestrator is one)."""

    profile: Profile

    @property
    def caps(self) -> dict[str, Capabilities]: ...
    @property
    def listeners(self) -> list[Callable[[ev.Event], None]]: ...

    async def start(self) -> None: ...
    async def run_job(self, step: int, n_servers: int, setup: SweepStep | None = None) -> int: ...
    async def settle(self, timeout_s: float = 1.0) -> None: ...
    async def model_header(self) -> ModelInfo: ...
    def emit(self, event: ev.Event) -> None: ...

QUICK_REPS = 2
FINAL_REPS = 5
FINALISTS = 3
#: the share of the budget the first round may use; the rest is for the finalists
FIRST_ROUND = 0.6


def _ranked_test(row: dict[str, Any]) -> bool:
    """The row the tuner ranks on: generation where the job has it, else the prompt."""
    return bool(row.get("n_gen")) and not row.get("n_prompt")


async def tune(orch: Bench, budget_s: float, out_path: Path | None = None,
               quick_reps: int = QUICK_REPS, final_reps: int = FINAL_REPS) -> ExitCode:
    """The whole search, on a connected, started cluster; emits TuneFinished."""
    start = time.monotonic()
    profile = orch.profile
    main = profile.main_node
    info = await orch.model_header()  # the header the preflight's plan read already

    def fits(p: Profile) -> tuple[bool, list[float]]:
        plan = make_plan(p, orch.caps, info)
        return plan.fits, (plan.suggested_split if plan.suggested_fits else [])

    bench_tool = orch.caps[main.label].tools.get("bench")
    has_fa = bool(bench_tool and bench_tool.has("-fa", "--flash-attn"))
    cands = ptune.candidates(profile, fits, flash_attn=has_fa)
    if not cands:
        raise UserError("no setup of this profile fits in memory, as planned",
                        "rpctui plan PROFILE shows where it does not fit", ExitCode.PREFLIGHT)
    await orch.start()

    results: dict[int, list[dict[str, Any]]] = {}

    def tap(e: ev.Event) -> None:
        if isinstance(e, ev.BenchResult):
            results.setdefault(e.step, []).append(e.row)

    orch.listeners.append(tap)
    outcomes = {c.name: ptune.Outcome(c) for c in cands}
    steps_of: dict[str, list[int]] = {}
    finals: set[str] = set()
    test = ""
    step = 0
    per_rep_s: list[float] = []

    async def bench(c: ptune.Candidate, reps: int) -> bool:
        nonlocal step, test
        job = dataclasses.replace(c.job, repetitions=reps)
        began = time.monotonic()
        rc = await orch.run_job(step, c.n_servers, SweepStep(c.name, job, {}))
        await orch.settle()
        per_rep_s.append((time.monotonic() - began) / reps)
        rows = results.get(step, [])
        steps_of.setdefault(c.name, []).append(step)
        step += 1
        row = next((r for r in rows if _ranked_test(r)), rows[0] if rows else None)
        if rc != 0 or row is None:
            return False
        test = test or bench_label(row)
        samples = row.get("samples_ts") or [row.get("avg_ts")]
        outcomes[c.name].samples += [float(x) for x in samples if isinstance(x, (int, float))]
        return True

    try:
        baseline = cands[0]
        if not await bench(baseline, quick_reps):
            raise UserError("the profile as written failed to bench; the tuner has no baseline",
                            "run it with rpctui run PROFILE and fix what it reports",
                            ExitCode.FAILED)
        tried = 1
        for c in cands[1:]:
            spent = time.monotonic() - start
            finals_cost = FINALISTS * final_reps * max(per_rep_s)
            if spent + quick_reps * max(per_rep_s) + finals_cost > budget_s:
                break
            await bench(c, quick_reps)
            tried += 1
        best = ptune.ranked(list(outcomes.values()))[:FINALISTS]
        names = [o.candidate.name for o in best]
        if baseline.name not in names:
            names.append(baseline.name)  # the margin is measured against it, alike
        for name in names:
            finals.add(name)
            await bench(outcomes[name].candidate, final_reps)
    finally:
        orch.listeners.remove(tap)

    ranking = ptune.ranked(list(outcomes.values()))
    # The winner comes from the finalists: a setup with two lucky repetitions does not beat
    # one measured again with more.
    winner = next(o for o in ranking if o.candidate.name in finals)
    gain, noise = ptune.margin(winner, outcomes[baseline.name])
    order = [f"{n.label}:{s.port}" for n, s in profile.servers()]
    written = ""
    if out_path is not None:
        written = str(write_tuned(profile, winner.candidate, out_path))
    shown = [o for o in ranking if o.candidate.name in finals] + [
        o for o in ranking if o.candidate.name not in finals]  # the finalists first
    orch.emit(ev.TuneFinished(
        test=test, setups=tuple(ev.TunedSetup(o.candidate.name, o.candidate.n_servers,
                                              round(o.mean, 3), round(o.sd, 3), len(o.samples),
                                              o.candidate.name in finals,
                                              tuple(steps_of.get(o.candidate.name, ())))
                                for o in shown),
        untried=len(cands) - tried, winner=winner.candidate.name, margin=round(gain, 4),
        noise=round(noise, 4), node_worth=tuple(ptune.node_worth(ranking, order)),
        written=written, seconds=round(time.monotonic() - start, 2)))
    return ExitCode.OK


def write_tuned(profile: Profile, winner: ptune.Candidate, out_path: Path) -> Path:
    """The profile as written, with the winner's job settings and servers; comments kept."""
    from rpctui.profile.load import load_document, save_document, set_value

    doc = load_document(profile.path)
    job: Any = doc["job"]
    for key, value in winner.changes:
        if value == [] or value is None:  # back to llama.cpp's default
            job.pop(key, None)
        else:
            set_value(doc, ("job", key), value)
    if "sweep" in doc:
        del doc["sweep"]
    left = winner.n_servers
    for i, node in enumerate(profile.nodes):
        keep = max(0, min(len(node.servers), left))
        left -= len(node.servers)
        if keep < len(node.servers):
            nodes: Any = doc["nodes"]
            table = nodes[i]
            if keep == 0:
                del table["servers"]
            else:
                del table["servers"][keep:]
    name = doc.get("name")
    doc["name"] = f"{name or Path(profile.path).stem}-tuned"
    save_document(doc, out_path)
    return out_path

