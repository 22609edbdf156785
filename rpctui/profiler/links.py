"""Link-test results: from the agents' raw answers to LinkMeasured, which links fall short,
and the table both faces print."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from rpctui.run import events as ev
from rpctui.run.report import markdown_table

#: A link is flagged below this fraction of its peers' median, or of its negotiated speed.
SHORT_OF_PEERS = 0.5
SHORT_OF_SPEED = 0.5
#: Round trips this many times the peers' median (and 1 ms more) are flagged too.
SLOWER_THAN_PEERS = 3.0


def _mbps(nbytes: Any, seconds: Any) -> float | None:
    if not isinstance(nbytes, int) or not isinstance(seconds, (int, float)) or seconds <= 0:
        return None
    return round(nbytes * 8 / seconds / 1e6, 2)


def measured(node: str, main: str, endpoint: str, raw: Mapping[str, Any], seconds: float,
             link: tuple[str, int | None, int | None] | None,
             main_link: tuple[str, int | None, int | None] | None,
             note: str = "") -> ev.LinkMeasured:
    """The client agent's JSON answer (hosts/agents/linktest.py) as an event."""
    notes = [n for n in (note, raw.get("error", "")) if n]

    def ms(key: str) -> float | None:
        value = raw.get(key)
        return round(float(value), 4) if isinstance(value, (int, float)) else None

    return ev.LinkMeasured(
        node=node, main=main, endpoint=endpoint, rtt_ms=ms("rtt_ms"), rtt_min_ms=ms("rtt_min_ms"),
        rtt_max_ms=ms("rtt_max_ms"), to_mbps=_mbps(raw.get("to_bytes"), raw.get("to_s")),
        from_mbps=_mbps(raw.get("from_bytes"), raw.get("from_s")), seconds=seconds,
        interface=link[0] if link else "", link_mbps=link[1] if link else None,
        mtu=link[2] if link else None, main_interface=main_link[0] if main_link else "",
        main_link_mbps=main_link[1] if main_link else None,
        main_mtu=main_link[2] if main_link else None, note="; ".join(notes))


def negotiated(link: ev.LinkMeasured) -> int | None:
    """The slower end's negotiated speed, where both or either end says."""
    speeds = [s for s in (link.link_mbps, link.main_link_mbps) if s]
    return min(speeds) if speeds else None


def assess(links: Sequence[ev.LinkMeasured]) -> list[tuple[str, str]]:
    """(node, what is wrong) for each link well below its peers or its negotiated speed."""
    flags: list[tuple[str, str]] = []
    for link in links:
        peers = [p for p in links if p is not link]
        problems: list[str] = []
        for way, value in (("to", link.to_mbps), ("from", link.from_mbps)):
            if value is None:
                continue
            others = [v for p in peers if (v := p.to_mbps if way == "to" else p.from_mbps)]
            if others and value < SHORT_OF_PEERS * statistics.median(others):
                problems.append(f"{way} {link.node} {value:.0f} Mb/s, under half its peers' "
                                f"{statistics.median(others):.0f} Mb/s")
            speed = negotiated(link)
            if speed and value < SHORT_OF_SPEED * speed:
                problems.append(f"{way} {link.node} {value:.0f} Mb/s, under half the "
                                f"negotiated {speed} Mb/s")
        rtts = [p.rtt_ms for p in peers if p.rtt_ms is not None]
        if link.rtt_ms is not None and rtts:
            typical = statistics.median(rtts)
            if link.rtt_ms > SLOWER_THAN_PEERS * typical and link.rtt_ms > typical + 1.0:
                problems.append(f"round trip {link.rtt_ms:.2f} ms, {link.rtt_ms / typical:.0f}x "
                                f"its peers' {typical:.2f} ms")
        if link.rtt_ms is None:
            problems.append(f"not measured: {link.note or 'no answer'}")
        if problems:
            flags.append((link.node, "; ".join(problems)))
    return flags


def _num(value: float | int | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table_rows(links: Sequence[ev.LinkMeasured]) -> list[list[str]]:
    """Header and rows: node, endpoint, RTT, both ways, interface, speed, MTU."""
    rows = [["node", "endpoint", "rtt ms", "min ms", "to Mb/s", "from Mb/s", "interface",
             "speed Mb/s", "MTU"]]
    for link in links:
        iface = link.interface or "-"
        if link.main_interface and link.main_interface != link.interface:
            iface = f"{link.main_interface} -> {iface}"
        mtus = {m for m in (link.main_mtu, link.mtu) if m}
        rows.append([link.node, link.endpoint, _num(link.rtt_ms, ".3f"),
                     _num(link.rtt_min_ms, ".3f"), _num(link.to_mbps, ".0f"),
                     _num(link.from_mbps, ".0f"), iface, _num(negotiated(link), "d"),
                     "/".join(str(m) for m in sorted(mtus)) or "-"])
    return rows


def render(links: Sequence[ev.LinkMeasured], flags: Sequence[tuple[str, str]]) -> str:
    """A Markdown table, then one line per flagged link and per note."""
    out = markdown_table(table_rows(links), {2, 3, 4, 5, 7, 8})
    for link in links:
        if link.note:
            out.append(f"note: {link.node}: {link.note}")
    for node, text in flags:
        out.append(f"flag: {node}: {text}")
    if not flags and links:
        out.append("no link falls short of its peers or its negotiated speed")
    return "\n".join(out) + "\n"
