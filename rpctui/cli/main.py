"""Command line: rpctui [PROFILE] | run | serve | models push | doctor | check | links | tune |
demo | build | plan | explain | replay | validate | history | compare | report.

Every error a user can cause ends in one message and a non-zero exit code
(see :class:`rpctui.errors.ExitCode`); a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rpctui.errors import ExitCode, UserError

if TYPE_CHECKING:
    from rpctui.profile.schema import Profile
    from rpctui.run.events import Event


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rpctui", description="Launch and profile llama.cpp RPC clusters.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the job a profile describes and print its results")
    run.add_argument("profile")
    run.add_argument("--format", choices=("md", "json", "csv"), default="md")
    run.add_argument("--out", metavar="FILE", help="also write the results to FILE")
    run.add_argument("-v", "--verbose", action="store_true", help="print every log line")
    run.add_argument("--force", action="store_true",
                     help="launch even when the memory plan says it will not fit")
    _metrics_flags(run)

    serve = sub.add_parser("serve", help="llama-server over the cluster as a service (job.kind "
                           "\"server\"): waits for its health, sends one completion, restarts "
                           "it and the rpc-servers after a crash, until Ctrl-C")
    serve.add_argument("profile")
    _metrics_flags(serve)

    check = sub.add_parser("check", help="connect, probe and preflight every node; start nothing")
    check.add_argument("profile")
    check.add_argument("--format", choices=("md", "json"), default="md")
    check.add_argument("--force", action="store_true", help="pass a plan that does not fit")

    demo = sub.add_parser("demo", help="two rpc-servers on this machine, one llama-bench")
    demo.add_argument("--headless", action="store_true", help="print results instead of the app")
    demo.add_argument("--flavour", default=None, help="llama.cpp flavour to build and use")
    demo.add_argument("--format", choices=("md", "json", "csv"), default="md")

    build = sub.add_parser("build", help="build llama.cpp (RPC on) into rpctui's cache, or "
                           "with a PROFILE on each of its nodes that says build = FLAVOUR")
    build.add_argument("flavours", nargs="*", default=["mainline"],
                       help="mainline, b6110, ik, or all; or one profile (.toml)")
    build.add_argument("--backend", choices=("cpu", "cuda", "vulkan", "rocm"), default="cpu",
                       help="build here for this backend as well as RPC (vulkan: headers "
                       "from $VULKAN_SDK/include when set)")

    plan = sub.add_parser("plan", help="predict where every layer lands and whether it fits")
    plan.add_argument("profile")
    plan.add_argument("--json", action="store_true", help="print the same as JSON (MiB)")
    plan.add_argument("--apply", action="store_true",
                      help="write the suggested tensor_split (or expert overrides) into the profile")
    plan.add_argument("--experts-on", metavar="NODE:PORT,...",
                      help="MoE: place expert tensors on these servers (-ot), the rest by split")

    explain = sub.add_parser("explain", help="read llama.cpp logs: buffers, devices, results, "
                             "and what went wrong")
    explain.add_argument("logs", nargs="+", help="log files (- for standard input)")
    explain.add_argument("--json", action="store_true", help="print the same as JSON")

    replay = sub.add_parser("replay", help="play a recorded run back in the app")
    replay.add_argument("run", help="a run's .jsonl (see rpctui run's last line)")
    replay.add_argument("--speed", type=float, default=1.0, help="playback speed (0: at once)")

    app = sub.add_parser("app", help="open the app on a profile (also: rpctui PROFILE)")
    app.add_argument("profile", nargs="?")
    _metrics_flags(app, hold=False)

    links = sub.add_parser("links", help="test every server node's link from the main node: "
                           "round trips and TCP throughput both ways, next to each interface's "
                           "speed and MTU")
    links.add_argument("profile")
    links.add_argument("--seconds", type=float, default=2.0,
                       help="seconds of throughput test each way (2; 0: round trips only)")
    links.add_argument("--pings", type=int, default=50, help="round trips to time (50)")
    links.add_argument("--format", choices=("md", "json"), default="md")

    tune = sub.add_parser("tune", help="bench the setups the planner says fit (server count, "
                          "split, micro-batch, flash attention), the best few again, and write "
                          "the fastest as a profile")
    tune.add_argument("profile")
    tune.add_argument("--budget", type=float, default=10.0, metavar="MINUTES",
                      help="time to spend, in minutes (10)")
    tune.add_argument("--out", metavar="FILE", help="where to write the winner (default: "
                      "PROFILE.tuned.toml beside the profile)")

    val = sub.add_parser("validate", help="validate profiles without connecting")
    val.add_argument("profiles", nargs="+")

    comp = sub.add_parser("compare", help="runs or sweep steps side by side: results with their "
                          "spread, load time, peak memory, and what differs")
    comp.add_argument("runs", nargs="+", metavar="RUN",
                      help="a run id (or a unique part of it), last, last~1; RUN:STEP for a "
                      "sweep step. The first is the baseline")

    rep = sub.add_parser("report", help="a report to post: t/s by node count, memory per node, "
                         "load per server, charts")
    rep.add_argument("runs", nargs="+", metavar="RUN", help="runs to report on (ids, parts of "
                     "ids, last, last~1); their results are pooled by node count")
    rep.add_argument("--format", choices=("md", "html"), default="md")
    rep.add_argument("--out", metavar="FILE", help="write to FILE (Markdown: the charts as SVG "
                     "files beside it)")

    doctor = sub.add_parser("doctor", help="check, plus: builds or the tools for them, disk "
                            "for model copies, each server's port as the main node sees it, "
                            "clocks; each finding with its fix")
    doctor.add_argument("profile")
    doctor.add_argument("--fix", action="store_true",
                        help="run rpctui build and rpctui models push where they apply first")

    models = sub.add_parser("models", help="models push PROFILE: copy job.model_source to the "
                            "nodes that need it (resumable, verified by sha256, skipped where "
                            "identical)")
    models.add_argument("action", choices=("push",))
    models.add_argument("profile")
    models.add_argument("--verify", action="store_true",
                        help="read every copy on the nodes again to compare hashes, rather than "
                        "trust the .sha256 written beside a verified copy")

    hist = sub.add_parser("history", help="past runs: list and filter, show one, export, import",
                          description="Every run is kept in a SQLite database (rpctui history "
                          "path); llama.cpp's scripts/compare-llama-bench.py reads it as it is.")
    hist.add_argument("action", nargs="?", choices=("list", "show", "export", "import", "path"),
                      help="list (the default), show RUN, export, import [FILE...], path")
    hist.add_argument("run", nargs="?", help="show: a run id (or a unique part of it), or last")
    hist.add_argument("paths", nargs="*", help="import: recordings (default: every new one)")
    for flag, help_text in (("--profile", "part of the profile's name"),
                            ("--model", "part of the model file's name"),
                            ("--nodes", "a node count, or a range such as 2-4"),
                            ("--build", "part of a build (b6110, 0c1e570, 11312)"),
                            ("--since", "runs from this date or time on (ISO, UTC)"),
                            ("--until", "runs before this date or time (a date: to its end)"),
                            ("--status", "ok, failed or interrupted")):
        hist.add_argument(flag, help=help_text)
    hist.add_argument("--limit", type=int, default=50, help="list: at most this many (50)")
    hist.add_argument("--format", choices=("table", "csv", "json"), default="table")
    hist.add_argument("--out", metavar="FILE", help="write to FILE instead of standard output")
    return p


def _metrics_flags(parser: argparse.ArgumentParser, hold: bool = True) -> None:
    parser.add_argument("--metrics", metavar="HOST:PORT",
                        help="serve Prometheus/OpenMetrics text while the run lasts (a port "
                        "alone: on 127.0.0.1)")
    if hold:
        parser.add_argument("--metrics-hold", type=float, default=0.0, metavar="SECONDS",
                            help="keep serving the metrics this long after the run ends, for "
                            "a scraper to read the results")


def _demo_profile(flavour: str | None) -> Profile:
    import dataclasses

    from rpctui.paths import example_path
    from rpctui.profile.load import load_profile

    profile = load_profile(example_path("loopback.toml"))
    if flavour:
        nodes = [dataclasses.replace(n, build=flavour) for n in profile.nodes]
        profile = dataclasses.replace(profile, nodes=nodes)
    return profile


def _build(flavours: list[str], backend: str = "cpu") -> ExitCode:
    from rpctui.llama.build import FLAVOURS, ensure_build, local_backend_cmake

    names = list(FLAVOURS) if flavours == ["all"] else flavours
    for name in names:
        def progress(msg: str, frac: float | None) -> None:
            pct = f" {frac * 100:3.0f}%" if frac is not None else ""
            end = "\n" if not sys.stderr.isatty() or frac in (None, 1.0) else ""
            print(f"\r\x1b[K{msg}{pct}" if sys.stderr.isatty() else f"{msg}{pct}", end=end,
                  file=sys.stderr, flush=True)
        b = ensure_build(name, local_backend_cmake(backend), progress=progress)
        print(f"{b.flavour}: {b.bin_dir}")
    return ExitCode.OK


def _explain(paths: list[str], as_json: bool) -> ExitCode:
    import json

    from rpctui.llama.explain import Explanation, explain_stream, render

    x = Explanation()
    for path in paths:
        if path == "-":
            explain_stream(sys.stdin.buffer, "<stdin>", x)
            continue
        try:
            with Path(path).open("rb") as fh:
                explain_stream(fh, path, x)
        except OSError as exc:
            raise UserError(f"cannot read log {path}: {exc.strerror}", "check the path") from None
    sys.stdout.write(json.dumps(x.to_dict(), indent=1) + "\n" if as_json else render(x))
    return ExitCode.OK


def load_profile(path: str) -> Profile:
    """The profile loader, imported when a command needs it (tomlkit is slow to import)."""
    from rpctui.profile.load import load_profile as load

    return load(path)


def _dispatch(args: argparse.Namespace) -> ExitCode:
    if args.command == "validate":
        for path in args.profiles:
            load_profile(path)
            print(f"{path}: ok")
        return ExitCode.OK
    if args.command == "build":
        if len(args.flavours) == 1 and args.flavours[0].endswith(".toml"):
            from rpctui.cli.headless import build_headless

            return build_headless(load_profile(args.flavours[0]))
        return _build(args.flavours, args.backend)
    if args.command == "compare":
        from rpctui.history import db
        from rpctui.history.compare import compare, render
        from rpctui.history.index import import_recordings

        conn = db.connect()
        try:
            import_recordings(None, conn)
            sys.stdout.write(render(*compare(conn, args.runs)))
        finally:
            conn.close()
        return ExitCode.OK
    if args.command == "report":
        from rpctui.cli.history import report_command

        return report_command(args.runs, args.format, args.out)
    if args.command == "doctor":
        from rpctui.cli.headless import doctor_headless

        return doctor_headless(load_profile(args.profile), fix=args.fix)
    if args.command == "models":
        from rpctui.cli.headless import push_headless

        return push_headless(load_profile(args.profile), verify=args.verify)
    if args.command == "history":
        from rpctui.cli.history import history_command

        if args.action == "import" and args.run:
            args.paths = [args.run, *args.paths]
        elif args.action == "show" and not args.run:
            raise UserError("history show needs a run", "give a run id from `rpctui history`, "
                            "or last")
        return history_command(args)
    if args.command == "explain":
        return _explain(args.logs, args.json)
    if args.command == "plan":
        from rpctui.cli.headless import plan_headless

        experts = args.experts_on.split(",") if args.experts_on else None
        return plan_headless(load_profile(args.profile), args.json, args.apply, experts)
    from rpctui.cli.headless import run_headless

    if args.command == "run":
        return run_headless(load_profile(args.profile), args.format, args.out,
                            verbose=args.verbose, force=args.force, metrics=args.metrics,
                            metrics_hold=args.metrics_hold)
    if args.command == "serve":
        from rpctui.cli.headless import run_headless

        profile = load_profile(args.profile)
        if profile.job.kind != "server":
            raise UserError(f"rpctui serve runs llama-server; {args.profile}'s job is "
                            f"{profile.job.kind!r}", 'set kind = "server" under [job]',
                            ExitCode.USAGE)
        return run_headless(profile, metrics=args.metrics, metrics_hold=args.metrics_hold,
                            command="serve")
    if args.command == "links":
        from rpctui.cli.headless import links_headless

        if args.seconds < 0 or args.pings < 1:
            raise UserError("--seconds must be 0 or more and --pings 1 or more",
                            "for example: rpctui links PROFILE --seconds 2 --pings 50")
        return links_headless(load_profile(args.profile), args.format, args.seconds,
                              args.pings)
    if args.command == "tune":
        from rpctui.cli.headless import tune_headless

        if args.budget <= 0:
            raise UserError("--budget must be more than 0 minutes", "for example: --budget 5")
        return tune_headless(load_profile(args.profile), args.budget, args.out)
    if args.command == "check":
        return run_headless(load_profile(args.profile), args.format, check_only=True,
                            force=args.force)
    if args.command == "demo":
        profile = _demo_profile(args.flavour)
        if args.headless:
            return run_headless(profile, args.format)
        return _app(profile=profile)
    if args.command == "replay":
        path = Path(args.run)
        if not path.is_file():
            raise UserError(f"no recorded run at {path}", "give the .jsonl path that "
                            "rpctui run printed (runs live in ~/.local/share/rpctui/runs)")
        from rpctui.history.store import read_run

        return _app(replay=path, speed=args.speed, events=read_run(path))  # refused here if newer
    if args.command == "app":
        return _app(profile=load_profile(args.profile) if args.profile else None,
                    metrics=args.metrics)
    return ExitCode.USAGE


def _app(profile: Profile | None = None, replay: Path | None = None,
         speed: float = 1.0, events: list[Event] | None = None, metrics: str | None = None) -> ExitCode:
    from rpctui.tui.app import RpcTuiApp

    if profile is not None and any(n.build for n in profile.nodes):
        # Builds take minutes: do them here with a progress display, before the app opens.
        from rpctui.engine.provision import backend_of
        from rpctui.llama.build import ensure_build, local_backend_cmake

        for node in profile.nodes:
            if node.build and node.is_local:  # other nodes' are `rpctui build PROFILE`'s
                ensure_build(node.build, local_backend_cmake(backend_of(node, {})),
                             progress=lambda m, f: print(f"\r\x1b[K{m}", end="",
                                                         file=sys.stderr))
        print("\r\x1b[K", end="", file=sys.stderr)
    if metrics:
        from rpctui.engine.metrics import parse_address

        parse_address(metrics)  # a bad address is refused before the app opens
    RpcTuiApp(profile=profile, replay=replay, replay_speed=speed, replay_events=events,
              metrics=metrics).run()
    return ExitCode.OK


COMMANDS = ("run", "serve", "models", "doctor", "check", "links", "tune", "demo", "build", "plan",
            "explain", "replay", "app", "validate", "history", "compare", "report")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is None and not any(a in ("-h", "--help") for a in argv):
        argv = [*argv, "app"]  # rpctui alone opens the app
    elif first is not None and first not in COMMANDS:
        argv = ["app" if a == first else a for a in argv[:argv.index(first)]] + ["app", first] \
            + argv[argv.index(first) + 1:]  # rpctui PROFILE
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        return int(_dispatch(args))
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
