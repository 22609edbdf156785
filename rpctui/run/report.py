"""Plain-text views of a ClusterState for the headless face: the live status block and the
final report (memory distribution, load time per server, peak memory per node)."""

from __future__ import annotations

from rpctui.run.state import ClusterState

BAR = 20


def markdown_table(rows: list[list[str]], right: set[int]) -> list[str]:
    """A header row and body rows as an aligned Markdown table; ``right``: columns aligned
    right (their rule ends in a colon)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return [line(rows[0]), rule, *(line(r) for r in rows[1:])]


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def bar(fraction: float, width: int = BAR) -> str:
    fraction = min(max(fraction, 0.0), 1.0)
    full = round(fraction * width)
    return "#" * full + "." * (width - full)


def status_lines(state: ClusterState) -> list[str]:
    """One line per node: memory bar, rx/tx rate, load percent of its servers, warnings."""
    lines = []
    warned = {w.node for w in state.warnings}
    for name in state.nodes:
        tel = state.telemetry.get(name)
        sample = tel.sample if tel else None
        if sample and sample.mem_total_mib and tel and tel.used_mib is not None:
            frac = tel.used_mib / sample.mem_total_mib
            mem = f"RAM [{bar(frac)}] {100 * frac:3.0f}%"
        else:
            mem = "RAM [" + "?" * BAR + "]  n/a"
        gpu = ""
        if sample:
            for g in sample.gpus:
                if g.vram_used_mib is not None and g.vram_total_mib:
                    gpu += f" {g.name[:12]} {100 * g.vram_used_mib / g.vram_total_mib:3.0f}%"
        net = (f"rx {human_bytes(tel.rx_bytes_per_s)}/s tx {human_bytes(tel.tx_bytes_per_s)}/s"
               if tel else "rx -/s tx -/s")
        loads = [lp for lp in state.loads.values() if lp.node == name and lp.endpoint]
        load = ""
        if loads:
            done = sum(lp.done_bytes for lp in loads)
            want = sum(lp.expected_bytes for lp in loads) or 1
            eta = max((lp.eta_s or 0) for lp in loads)
            load = f" load {100 * done / want:5.1f}%" + (f" eta {eta:.0f}s" if eta else "")
        flag = "  WARNING" if name in warned else ""
        lines.append(f"{name[:12]:12s} {mem}{gpu}  {net}{load}{flag}")
    return lines


def plan_check_lines(state: ClusterState) -> list[str]:
    """The memory plan next to what llama.cpp allocated, per job step: model and KV are
    predicted, compute buffers estimated, so their errors are kept apart."""
    out: list[str] = []
    for check in state.plan_checks:
        out.append(f"plan vs llama.cpp (step {check.step}, MiB): worst error "
                   f"{check.worst_error_mib:.2f}")
        for device, pm, am, pk, ak in check.rows:
            out.append(f"  {device:28s} model {pm:9.2f} planned {am:9.2f} allocated   "
                       f"KV {pk:7.2f} planned {ak:7.2f} allocated")
        if check.compute:
            out.append(f"  compute buffers (estimated, worst error {check.compute_worst_pct:.0f} %):")
        for device, est, got in check.compute:
            out.append(f"  {device:28s} compute {est:7.2f} estimated {got:7.2f} allocated")
    if not out and state.plan is not None:
        plan = state.plan
        compute = dict(plan.compute)
        out.append(f"memory plan ({plan.flavour}, KV for {plan.n_ctx} tokens, MiB; compute "
                   f"estimated):")
        for device, node, model, kv, usable, fits in plan.rows:
            need = model + kv + compute.get(device, 0.0)
            out.append(f"  {device:28s} {node:10s} {model:9.2f} + {kv:7.2f} + "
                       f"{compute.get(device, 0.0):7.2f} = {need:9.2f} of {usable:9.0f}"
                       f"{'' if fits else '  DOES NOT FIT'}")
    return out


def final_report(state: ClusterState) -> list[str]:
    out: list[str] = []
    if state.distributions:
        dist = state.distributions[-1]
        out.append("memory distribution (MiB, model + KV + compute, as the client allocated):")
        per_node: dict[str, float] = {}
        for node, device, model, kv, compute in dist.rows:
            total = model + kv + compute
            per_node[node] = per_node.get(node, 0.0) + total
            out.append(f"  {node:12s} {device:28s} {model:10.2f} + {kv:8.2f} + {compute:8.2f}"
                       f" = {total:10.2f}")
        out.append("  " + ", ".join(f"{n}: {v:.0f} M" for n, v in per_node.items()))
    if state.loads_finished:
        out.append("load time per server:")
        for lf in state.loads_finished:
            out.append(f"  {lf.endpoint:24s} {lf.seconds:7.2f} s  {lf.expected_bytes / 2**20:9.2f} MiB"
                       f"  moved {human_bytes(lf.moved_bytes)}  {human_bytes(lf.rate_bytes_per_s)}/s")
    if state.telemetry:
        out.append("peak memory per node:")
        for name, tel in state.telemetry.items():
            gpu = f", GPU {tel.peak_gpu_mib:.0f} MiB" if tel.peak_gpu_mib else ""
            out.append(f"  {name:12s} servers {tel.peak_procs_mib:8.1f} MiB resident, "
                       f"node RAM in use {tel.peak_used_mib:8.0f} MiB{gpu}")
    out += plan_check_lines(state)
    for w in state.warnings:
        out.append(f"warning: {w.message}")
    return out
