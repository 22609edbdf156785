"""Command lines for rpc-server and the job's tool, from profile + probed capabilities (pure).

A setting is translated into whatever spelling the probed build accepts
(``mmap = false`` becomes ``-lm none``, ``--no-mmap`` or ``-mmp 0``). A setting
the build cannot honour raises :class:`Unsupported`, naming the node, the build
and what to do instead: never a silently dropped flag.
"""

from __future__ import annotations

from pathlib import Path

from rpctui.errors import ExitCode, UserError
from rpctui.llama.caps import Capabilities, Tool
from rpctui.profile.schema import Job, Node, Server, TensorOverride, endpoint


class Unsupported(UserError):
    def __init__(self, caps: Capabilities, what: str, fix: str) -> None:
        super().__init__(f"node {caps.node}: llama.cpp {caps.flavour} build {caps.build} {what}",
                         fix, ExitCode.PREFLIGHT)


def _check_extra(caps: Capabilities, tool: Tool, args: list[str], where: str) -> list[str]:
    """extra_args pass through as written, but a flag the build does not list is an error:
    llama.cpp tools print usage and exit 0 on an unknown flag, which looks like success."""
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and not flag[1:2].isdigit() and flag not in tool.flags:
            raise Unsupported(caps, f"{Path(tool.path).name} has no flag {flag}",
                              f"remove {flag} from {where}, or use a build that has it")
    return list(args)


def _need(caps: Capabilities, role: str) -> Tool:
    tool = caps.tools.get(role)
    if tool is None:
        raise Unsupported(caps, f"has no {role} binary", "set bin_dir to a llama.cpp build "
                          "directory with it, or build one with: rpctui build")
    return tool


def server_argv(caps: Capabilities, node: Node, server: Server) -> tuple[list[str], list[str]]:
    """(argv, notes): the rpc-server command line and anything the user should know about it."""
    tool = _need(caps, "server")
    notes: list[str] = []
    argv = [tool.path, "-H", server.bind, "-p", str(server.port)]
    if server.devices:
        if not tool.has("-d", "--device"):
            raise Unsupported(caps, "cannot choose server devices (no -d)",
                              "remove devices from this server, or use a newer build")
        if len(server.devices) > 1 and "dev1,dev2" not in tool.flag_line("--device"):
            raise Unsupported(caps, "serves one device per rpc-server",
                              "start one server per device, each with its own port")
        argv += ["-d", ",".join(server.devices)]
    if server.threads:
        argv += ["-t", str(server.threads)]
    if server.cache:
        if not tool.has("-c", "--cache"):
            raise Unsupported(caps, "has no tensor cache (-c)", "set cache = false for this server")
        argv.append("-c")
    if server.memory_mib:
        if tool.has("-m", "--mem"):
            argv += ["-m", str(server.memory_mib)]
        else:
            notes.append(f"{endpoint(node, server)}: this build has no -m; the memory budget "
                         f"is not passed to rpc-server (rpctui plan applies budgets as a split)")
    argv += _check_extra(caps, tool, server.extra_args, "this server's extra_args")
    return argv, notes


def rpc_list(caps: Capabilities, endpoints: list[str], tool_role: str) -> str:
    """The --rpc value; ik_llama.cpp's llama-bench wants each endpoint as host:port|device."""
    if caps.flavour == "ik" and tool_role == "bench":
        return ",".join(f"{ep}|0" for ep in endpoints)
    return ",".join(endpoints)


def rpc_buffer(caps: Capabilities, ep: str, device: int) -> str:
    """The buffer name the client gives a server's device (for -ot)."""
    if caps.flavour == "seed-era":
        return f"RPC[{ep}]"
    return f"RPC{device}[{ep}]"


def _on_off(tool: Tool, flag: str, value: bool) -> list[str]:
    line = tool.flag_line(flag)
    if "on|off" in line:
        return [flag, "on" if value else "off"]
    if "<0|1>" in line:
        return [flag, "1" if value else "0"]
    # A plain switch: present means on.
    return [flag] if value else []


def _mmap(caps: Capabilities, tool: Tool, value: bool) -> list[str]:
    if tool.has("-lm", "--load-mode"):
        return ["-lm", "mmap" if value else "none"]
    if tool.has("-mmp"):
        return ["-mmp", "1" if value else "0"]
    if tool.has("--no-mmap"):
        return [] if value else ["--no-mmap"]
    raise Unsupported(caps, "cannot choose how the model is loaded",
                      "remove mmap from the job")


def _overrides(caps: Capabilities, rules: list[TensorOverride], eps: dict[str, str]) -> list[str]:
    out = []
    for rule in rules:
        if rule.server:
            out.append(f"{rule.pattern}={rpc_buffer(caps, eps[rule.server], rule.device)}")
        else:
            out.append(f"{rule.pattern}={rule.buffer}")
    return out


def job_tool(caps: Capabilities, kind: str) -> tuple[str, Tool]:
    """Which binary runs a job kind on this build: (role, tool)."""
    order = {"bench": ["bench"], "cli": ["cli", "completion"], "completion": ["completion", "cli"],
             "server": ["http"]}[kind]
    for role in order:
        if role in caps.tools:
            return role, caps.tools[role]
    names = {"bench": "llama-bench", "cli": "llama-cli or llama-completion",
             "completion": "llama-completion or llama-cli", "server": "llama-server"}[kind]
    raise Unsupported(caps, f"has no {names} for a {kind} job",
                      "set bin_dir on the main node to a build with it, or build one with: "
                      "rpctui build")


def job_argv(caps: Capabilities, job: Job, model: str, endpoints: list[str],
             server_names: dict[str, str], progress: bool = False) -> list[str]:
    """The job's command line on the main node. ``server_names`` maps node:port to endpoints;
    ``progress``: llama-bench says when each repetition starts (where it has --progress)."""
    role, tool = job_tool(caps, job.kind)
    bench = role == "bench"
    argv = [tool.path, "-m", model]
    if endpoints:
        argv += ["--rpc", rpc_list(caps, endpoints, role)]
    if bench:
        fmt = "jsonl" if "jsonl" in tool.flag_line("--output") else "json"
        argv += ["-o", fmt, "-v"]
        if progress and tool.has("--progress"):
            argv.append("--progress")
    if job.ngl is not None:
        argv += ["-ngl", str(job.ngl)]
    if job.flash_attn is not None:
        argv += _on_off(tool, "-fa", job.flash_attn)
    if job.mmap is not None:
        argv += _mmap(caps, tool, job.mmap)
    if job.fit is not None:
        if not tool.has("--fit"):
            raise Unsupported(caps, f"{role} has no --fit", "remove fit from the job")
        argv += ["--fit", "on" if job.fit else "off"]
    if job.tensor_split:
        sep = "/" if bench else ","
        argv += ["-ts", sep.join(f"{x:g}" for x in job.tensor_split)]
    if job.override_tensors:
        if not tool.has("-ot", "--override-tensor"):
            raise Unsupported(caps, f"{role} has no -ot", "remove override_tensors from the job")
        if caps.flavour == "ik" and any(r.server for r in job.override_tensors):
            # Its llama-bench (and its common argument parser) look -ot buffer names up among
            # the local backends only, before --rpc adds a server ("invalid parameter for
            # argument: -ot", seen on an H200 with Vulkan servers).
            raise Unsupported(caps, f"{Path(tool.path).name} cannot put tensors on an RPC "
                              "server with -ot", "use tensor_split for this placement, or a "
                              "current mainline build")
        if bench and caps.flavour == "seed-era" and any(r.server for r in job.override_tensors):
            # Its llama-bench looks -ot buffer names up before --rpc has added any RPC
            # device, and fails with a misleading "invalid parameter" (seen with b6110).
            raise Unsupported(caps, "llama-bench cannot put tensors on an RPC server with -ot",
                              "use job.kind = \"cli\" for this placement, or a current build")
        sep = ";" if bench else ","
        argv += ["-ot", sep.join(_overrides(caps, job.override_tensors, server_names))]
    if job.batch_size:
        argv += ["-b", str(job.batch_size)]
    if job.ubatch_size:
        argv += ["-ub", str(job.ubatch_size)]
    if job.threads:
        argv += ["-t", str(job.threads)]
    if job.cache_type_k:
        argv += ["-ctk", job.cache_type_k]
    if job.cache_type_v:
        argv += ["-ctv", job.cache_type_v]
    if bench:
        if job.ctx_size:
            raise Unsupported(caps, "llama-bench has no context size (-c)",
                              "use prompt_tokens/gen_tokens/depth for a bench job")
        for flag, values in (("-p", job.prompt_tokens), ("-n", job.gen_tokens), ("-d", job.depth)):
            if values:
                argv += [flag, ",".join(str(v) for v in values)]
        if job.repetitions:
            argv += ["-r", str(job.repetitions)]
    elif role == "http":
        argv += ["--host", "127.0.0.1", "--port", str(job.server_port)]
        if job.ctx_size:
            argv += ["-c", str(job.ctx_size)]
    else:
        if job.ctx_size:
            argv += ["-c", str(job.ctx_size)]
        argv += ["-p", job.prompt, "-n", str(job.n_predict)]
        # One-shot: the classic -no-cnv where the tool has it, else a single chat turn.
        if tool.has("-no-cnv", "--no-conversation"):
            argv.append("-no-cnv")
        elif tool.has("-st", "--single-turn"):
            argv.append("-st")
    if not bench:
        argv += _log_level(caps, tool, job.extra_args)
    argv += _check_extra(caps, tool, job.extra_args, "job.extra_args")
    return argv


#: the flags that set a tool's log level (a job's extra_args with one keeps its own)
_LOG_FLAGS = {"-lv", "--verbosity", "--log-verbosity", "-v", "--verbose", "--log-verbose"}


def _log_level(caps: Capabilities, tool: Tool, extra: list[str]) -> list[str]:
    """Current mainline's llama-completion, llama-cli and llama-server log llama.cpp's own
    lines (the buffer sizes: the plan check and the memory table) at TRACE, level 4 of
    common/log.h, below their default of 3 (INFO): ask for them. Older builds print them
    by default."""
    if caps.flavour != "mainline" or not tool.has("-lv", "--log-verbosity"):
        return []
    if _LOG_FLAGS & set(extra):
        return []
    return ["-lv", "4"]
