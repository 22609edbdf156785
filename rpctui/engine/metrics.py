"""The run as Prometheus / OpenMetrics text, for people who already run Grafana.

`rpctui run --metrics HOST:PORT` (and the app's --metrics) serves the latest ClusterState while
the run lasts: per-node memory, network rates, per-server state and load progress, job results.
The state is immutable and replaced as events arrive, so the scrape thread reads whichever
state is current without a lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from rpctui.errors import UserError
from rpctui.llama.bench import bench_label
from rpctui.run.state import ClusterState


class StateCollector(Collector):
    """Gauges from whatever ClusterState ``current()`` returns at scrape time."""

    def __init__(self, current: Callable[[], ClusterState]) -> None:
        self.current = current

    def collect(self) -> Iterator[Any]:
        s = self.current()
        info = InfoMetricFamily("rpctui_run", "The run being served")
        info.add_metric([], {"run_id": s.run_id, "profile": s.profile, "main": s.main,
                             "job": s.job.status, "teardown": s.teardown or "no"})
        yield info
        ram_used = GaugeMetricFamily("rpctui_node_memory_used_bytes", "RAM in use on the node",
                                     labels=["node"])
        ram_total = GaugeMetricFamily("rpctui_node_memory_total_bytes", "RAM on the node",
                                      labels=["node"])
        rx = GaugeMetricFamily("rpctui_node_network_receive_bytes_per_second",
                               "Bytes received per second over the node's interfaces",
                               labels=["node"])
        tx = GaugeMetricFamily("rpctui_node_network_transmit_bytes_per_second",
                               "Bytes sent per second over the node's interfaces", labels=["node"])
        vram = GaugeMetricFamily("rpctui_gpu_memory_used_bytes", "GPU memory in use (VRAM; GTT "
                                 "on AMD APUs as kind=gtt)", labels=["node", "gpu", "kind"])
        vram_total = GaugeMetricFamily("rpctui_gpu_memory_total_bytes", "GPU memory",
                                       labels=["node", "gpu", "kind"])
        mib = 2**20
        for node, tel in s.telemetry.items():
            sample = tel.sample
            if sample is None:
                continue
            if tel.used_mib is not None:
                ram_used.add_metric([node], tel.used_mib * mib)
            if sample.mem_total_mib:
                ram_total.add_metric([node], sample.mem_total_mib * mib)
            rx.add_metric([node], tel.rx_bytes_per_s)
            tx.add_metric([node], tel.tx_bytes_per_s)
            for g in sample.gpus:
                for kind, used, total in (("vram", g.vram_used_mib, g.vram_total_mib),
                                          ("gtt", g.gtt_used_mib, g.gtt_total_mib)):
                    if used is not None:
                        vram.add_metric([node, g.name, kind], used * mib)
                    if total:
                        vram_total.add_metric([node, g.name, kind], total * mib)
        yield from (ram_used, ram_total, rx, tx, vram, vram_total)

        up = GaugeMetricFamily("rpctui_server_ready", "1 while the rpc-server is ready",
                               labels=["node", "endpoint"])
        for endpoint, server in s.servers.items():
            up.add_metric([server.node, endpoint], 1.0 if server.status == "ready" else 0.0)
        yield up
        progress = GaugeMetricFamily("rpctui_server_load_progress_ratio",
                                     "Share of the server's expected model bytes received "
                                     "(endpoint=local: the main node's own share)",
                                     labels=["node", "endpoint"])
        rate = GaugeMetricFamily("rpctui_server_load_bytes_per_second",
                                 "Model bytes received per second while loading",
                                 labels=["node", "endpoint"])
        for endpoint, lp in s.loads.items():
            progress.add_metric([lp.node, endpoint or "local"], lp.percent / 100)
            rate.add_metric([lp.node, endpoint or "local"], lp.rate_bytes_per_s)
        yield from (progress, rate)
        tps = GaugeMetricFamily("rpctui_bench_tokens_per_second",
                                "llama-bench's result: mean tokens per second",
                                labels=["test", "step", "servers"])
        sd = GaugeMetricFamily("rpctui_bench_tokens_per_second_stddev",
                               "llama-bench's result: standard deviation",
                               labels=["test", "step", "servers"])
        for r in s.results:
            labels = [bench_label(r.row), str(r.step), str(r.n_servers)]
            if isinstance(r.row.get("avg_ts"), (int, float)):
                tps.add_metric(labels, float(r.row["avg_ts"]))
            if isinstance(r.row.get("stddev_ts"), (int, float)):
                sd.add_metric(labels, float(r.row["stddev_ts"]))
        yield from (tps, sd)
        warnings = GaugeMetricFamily("rpctui_memory_warnings", "Out-of-memory warnings so far",
                                     labels=["node"])
        for node in s.nodes:
            warnings.add_metric([node], float(sum(1 for w in s.warnings if w.node == node)))
        yield warnings


def parse_address(value: str) -> tuple[str, int]:
    """HOST:PORT or PORT (then 127.0.0.1: nothing is exposed beyond this machine unless asked)."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--metrics {value!r} is not HOST:PORT",
                        "give a port (served on 127.0.0.1) or HOST:PORT, such as 0.0.0.0:9464")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(address: str, current: Callable[[], ClusterState]) -> Callable[[], None]:
    """Serve the metrics on ``address`` from a thread; returns the function that stops it."""
    from prometheus_client import start_http_server

    host, port = parse_address(address)
    registry = CollectorRegistry()
    registry.register(StateCollector(current))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UserError(f"cannot serve metrics on {host}:{port}: {exc.strerror}",
                        "choose a free port (--metrics HOST:PORT)") from None

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
