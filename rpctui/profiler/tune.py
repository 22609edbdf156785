"""The tuner's reasoning: which setups to try, which one won and by how much, and what each
node adds. The engine (engine/tune.py) runs the benches; this module only decides.

Setups vary what the profile leaves open and the planner can judge: how many of the servers
(in profile order) the job uses, the tensor split (as written, even, or the planner's), the
micro-batch and flash attention. A setup the memory plan says does not fit is not run.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rpctui.profile.schema import Job, Profile, Server
from rpctui.run import events as ev
from rpctui.run.report import markdown_table

#: Micro-batch sizes tried beside the profile's own (llama.cpp's default is 512).
UBATCH_SIZES = (128, 512)


@dataclass(frozen=True)
class Candidate:
    """One setup to bench: the first ``n_servers`` servers and this job."""

    name: str
    n_servers: int
    job: Job
    changes: tuple[tuple[str, Any], ...] = ()  #: job settings that differ from the profile


@dataclass
class Outcome:
    candidate: Candidate
    samples: list[float] = field(default_factory=list)  #: t/s of each repetition, both stages

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else 0.0

    @property
    def sd(self) -> float:
        return statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0


def with_servers(profile: Profile, n: int) -> Profile:
    """The profile with only its first ``n`` servers (profile order)."""
    kept: list[list[Server]] = []
    left = n
    for node in profile.nodes:
        kept.append(list(node.servers[:max(0, left)]))
        left -= len(node.servers)
    nodes = [dataclasses.replace(node, servers=servers)
             for node, servers in zip(profile.nodes, kept, strict=True)]
    return dataclasses.replace(profile, nodes=nodes, sweep=None)


def _label(changes: dict[str, Any], n: int, n_all: int) -> str:
    parts = [] if n == n_all else [f"{n} server" + ("s" if n != 1 else "")]
    for key, value in changes.items():
        if key == "tensor_split":
            parts.append("split " + ("/".join(f"{x:g}" for x in value) or "default"))
        elif key == "flash_attn":
            parts.append("fa " + ("on" if value else "off"))
        elif key == "ubatch_size":
            parts.append(f"ub {value}")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts) or "as written"


def candidates(profile: Profile, fits: Callable[[Profile], tuple[bool, list[float]]],
               flash_attn: bool = True) -> list[Candidate]:
    """Setups the planner says fit: the profile as written first, then those that change one
    setting, then two, and so on. ``fits(profile)`` answers (whether it fits, the planner's
    suggested split); ``flash_attn``: whether the build has -fa."""
    n_all = len(profile.servers())
    job = profile.job
    fa_values: list[bool | None] = [job.flash_attn]
    if flash_attn:
        fa_values.append(not job.flash_attn if job.flash_attn is not None else True)
    ub_values: list[int | None] = [job.ubatch_size, *(u for u in UBATCH_SIZES
                                                      if u != job.ubatch_size)]
    out: list[Candidate] = []
    for n in list(range(n_all, 0, -1)) or [0]:  # no servers: the main node's settings alone
        sub = with_servers(profile, n)
        written = list(job.tensor_split) if n == n_all else []
        _, suggested = fits(dataclasses.replace(sub, job=dataclasses.replace(
            job, tensor_split=written)))
        splits = [written]
        if len(suggested) > 1:  # one device takes everything whatever the split says
            splits.append([round(x, 3) for x in suggested])
        if n > 1:
            splits.append([1.0] * n)
        for split in [list(s) for s in dict.fromkeys(tuple(s) for s in splits)]:
            if not fits(dataclasses.replace(sub, job=dataclasses.replace(
                    job, tensor_split=split)))[0]:
                continue
            for fa in fa_values:
                for ub in ub_values:
                    changes: dict[str, Any] = {}
                    if split != list(job.tensor_split):
                        changes["tensor_split"] = split
                    if fa != job.flash_attn:
                        changes["flash_attn"] = fa
                    if ub != job.ubatch_size:
                        changes["ubatch_size"] = ub
                    out.append(Candidate(_label(changes, n, n_all), n,
                                         dataclasses.replace(job, **changes),
                                         tuple(changes.items())))
    return sorted(out, key=lambda c: (len(c.changes) + (c.n_servers != n_all)))


def ranked(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """Best first, by mean t/s."""
    return sorted((o for o in outcomes if o.samples), key=lambda o: -o.mean)


def margin(winner: Outcome, baseline: Outcome) -> tuple[float, float]:
    """The winner's gain over the baseline (a fraction) and the noise on that gain: the two
    standard errors combined, relative to the baseline."""
    if not baseline.samples or baseline.mean <= 0:
        return 0.0, math.inf
    gain = winner.mean / baseline.mean - 1
    se = math.sqrt((winner.sd ** 2 / max(1, len(winner.samples)))
                   + (baseline.sd ** 2 / max(1, len(baseline.samples))))
    return gain, se / baseline.mean


def node_worth(outcomes: Sequence[Outcome], order: Sequence[str]) -> list[tuple[str, float]]:
    """What each server adds (+) or costs (-) in t/s: the profile's other settings kept, the
    best with k servers against the best with k - 1. ``order``: the servers' labels, in
    profile order."""
    best: dict[int, float] = {}
    for o in outcomes:
        c = o.candidate
        plain = all(k == "tensor_split" for k, _ in c.changes)
        if o.samples and plain:
            best[c.n_servers] = max(best.get(c.n_servers, 0.0), o.mean)
    out = []
    for n in sorted(best):
        if n - 1 in best:
            out.append((order[n - 1], round(best[n] - best[n - 1], 2)))
    return out


def render(t: ev.TuneFinished) -> str:
    """The tuner's table (the finalists first, each round best first), then its verdict."""
    rows = [["setup", "servers", f"{t.test} t/s", "± sd", "reps", "round"]]
    for s in t.setups:
        rows.append([s.name, str(s.n_servers), f"{s.mean_ts:.2f}", f"{s.sd_ts:.2f}",
                     str(s.samples), "final" if s.final else "first"])
    lines = markdown_table(rows, {1, 2, 3, 4})
    within = abs(t.margin) <= 2 * t.noise
    lines += ["", f"winner: {t.winner}, {t.margin * 100:+.1f} % against the profile as written "
                  f"(noise ± {t.noise * 100:.1f} %" + ("; within the noise)" if within else ")")]
    for server, delta in t.node_worth:
        lines.append(f"server {server} {'adds' if delta >= 0 else 'costs'} {abs(delta):.2f} t/s "
                     f"({t.test})")
    if t.untried:
        lines.append(f"{t.untried} more setups fit but the budget left no time for them "
                     f"(--budget)")
    if t.written:
        lines.append(f"written to {t.written}")
    lines.append(f"tuned in {t.seconds:.0f} s")
    return "\n".join(lines) + "\n"
