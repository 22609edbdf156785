"""The profiler's figures against independent ones, on the namespace rig.

1. Link test: n3's link capped with tc tbf at several rates; `rpctui links` both ways against
   iperf3's receiver figures; n2 behind tests/relay.py adding D ms each way; its round trip
   against an unshaped peer's plus 2 D.
2. Breakdown: n2 (one of two servers) behind the relay, first adding nothing, then D ms each
   way; the first run's breakdown, given the second run's measured round trip, predicts its
   time per token; the error of the predicted change against the measured one. Then n3's link
   capped instead: the prediction from the link test's throughput.

    .venv/bin/python bench/profiler_accuracy.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.history.store import read_run  # noqa: E402 - after the sys.path line above
from rpctui.llama.build import ensure_build  # noqa: E402 - after the sys.path line above
from rpctui.llama.tinymodel import ensure_model  # noqa: E402 - after the sys.path line above
from rpctui.profiler.breakdown import predicted_ms  # noqa: E402 - after the sys.path line above
from rpctui.run import events as ev  # noqa: E402 - after the sys.path line above
from tests.rig import Rig  # noqa: E402 - after the sys.path line above
from tests.test_profiler import Relay, _iperf3, _profile  # noqa: E402 - after the sys.path line above


def rpctui(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rpctui.cli.main", *args], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "XDG_DATA_HOME": str(work)})


def last_run(work: Path) -> list[ev.Event]:
    return read_run(sorted((work / "rpctui" / "runs").glob("*.jsonl"))[-1])


def tg(events: list[ev.Event]) -> ev.TokenBreakdown:
    return next(e for e in events if isinstance(e, ev.TokenBreakdown) and e.phase == "generation")


def links(rig: Rig, bins: str, model: str, work: Path) -> None:
    n1, n2, n3, n4 = rig.nodes
    print("link test against iperf3 (n3 capped with tbf; receiver-side Mb/s, 3 s each way)")
    print("| cap | rpctui to | iperf3 to | error | rpctui from | iperf3 from | error |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for rate in ("50mbit", "200mbit", "1000mbit"):
        rig.shape(n3, rate)
        profile = _profile(rig, work / "l.toml", bins, model, {}, servers=[1, 2, 3])
        out = rpctui(work, "links", str(profile), "--seconds", "3", "--format", "json")
        got = {link["node"]: link for link in json.loads(out.stdout)["links"]}["n3"]
        it, ifr = _iperf3(rig, n1, n3, False), _iperf3(rig, n1, n3, True)
        print(f"| {rate} | {got['to_mbps']:.1f} | {it:.1f} | {got['to_mbps'] / it - 1:+.1%} | "
              f"{got['from_mbps']:.1f} | {ifr:.1f} | {got['from_mbps'] / ifr - 1:+.1%} |")
        rig.unshape(n3)
    print()
    print("round trip through the relay (n2) against an unshaped peer (n4) + 2 x delay")
    print("| delay each way | n2 rtt | n4 rtt | expected | error |")
    print("| --- | --- | --- | --- | --- |")
    for delay in (1.0, 5.0, 20.0):
        relay = Relay(rig, n2, delay, [50052])
        try:
            profile = _profile(rig, work / "l.toml", bins, model, {1: relay.address},
                               servers=[1, 2, 3])
            out = rpctui(work, "links", str(profile), "--seconds", "0", "--pings", "100",
                         "--format", "json")
        finally:
            relay.close()
        got = {link["node"]: link for link in json.loads(out.stdout)["links"]}
        want = got["n4"]["rtt_ms"] + 2 * delay
        print(f"| {delay:g} ms | {got['n2']['rtt_ms']:.3f} ms | {got['n4']['rtt_ms']:.3f} ms | "
              f"{want:.3f} ms | {got['n2']['rtt_ms'] - want:+.3f} ms |")


def breakdown(rig: Rig, bins: str, model: str, work: Path) -> None:
    job = (f'[job]\nmodel = "{model}"\nngl = 99\nprompt_tokens = [16]\ngen_tokens = [48]\n'
           "repetitions = 3\n")
    print()
    print("breakdown: predicted against measured change of tg48's time per token")
    print("| fault | base ms/token | faulted ms/token | predicted | measured change | "
          "predicted change | error | bottleneck named |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    runs: dict[float, list[ev.Event]] = {}
    for delay in (0.0, 2.0, 5.0, 10.0):
        relay = Relay(rig, rig.nodes[1], delay, [50052])
        try:
            profile = _profile(rig, work / "b.toml", bins, model, {1: relay.address},
                               servers=[1, 2], job=job)
            rpctui(work, "run", str(profile))
        finally:
            relay.close()
        runs[delay] = last_run(work)
    base = tg(runs[0.0])
    for delay in (2.0, 5.0, 10.0):
        slow = tg(runs[delay])
        rtt = next(e.rtt_ms for e in runs[delay] if isinstance(e, ev.LinkMeasured)
                   and e.node == "n2")
        pred = predicted_ms(base, {"n2": rtt or 0.0}) or 0.0
        meas, want = slow.ms_per_token - base.ms_per_token, pred - base.ms_per_token
        print(f"| n2 +{delay:g} ms each way | {base.ms_per_token:.3f} | {slow.ms_per_token:.3f} | "
              f"{pred:.3f} | {meas:.3f} | {want:.3f} | {want / meas - 1:+.1%} | "
              f"{slow.bottleneck} |")
    # Bandwidth: n3's link capped; the prediction from the base run with the capped link's
    # measured throughput.
    profile = _profile(rig, work / "b.toml", bins, model, {}, servers=[1, 2], job=job)
    rpctui(work, "run", str(profile))
    base = tg(last_run(work))
    for rate, burst in (("100mbit", "64kb"), ("100mbit", "4kb"), ("20mbit", "64kb"),
                        ("20mbit", "4kb")):
        rig.shape(rig.nodes[2], rate, burst)
        rpctui(work, "run", str(profile))
        events = last_run(work)
        rig.unshape(rig.nodes[2])
        slow = tg(events)
        link = next(e for e in events if isinstance(e, ev.LinkMeasured) and e.node == "n3")
        pred = predicted_ms(base, {}, {"n3": (link.to_mbps or 0.0, link.from_mbps or 0.0)}) or 0.0
        meas, want = slow.ms_per_token - base.ms_per_token, pred - base.ms_per_token
        print(f"| n3 capped at {rate} (burst {burst}) | {base.ms_per_token:.3f} | {slow.ms_per_token:.3f} | "
              f"{pred:.3f} | {meas:.3f} | {want:.3f} | {want / meas - 1:+.1%} | "
              f"{slow.bottleneck} |")


def main() -> None:
    bins = str(ensure_build("mainline").bin_dir)
    model = str(ensure_model("tiny"))
    work = Path(tempfile.mkdtemp(prefix="rpctui-profiler-"))
    rig = Rig(4, prefix="rq", net=219).up()
    try:
        links(rig, bins, model, work)
        breakdown(rig, bins, model, work)
    finally:
        for node in rig.nodes:
            rig.unshape(node)
        rig.down()


if __name__ == "__main__":
    main()
