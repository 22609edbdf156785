"""Profiles: what a cluster is made of and what job it runs.

A profile is a TOML file; :mod:`rpctui.profile.load` reads and validates it into
these frozen records. Every field carries a one-line ``doc`` in its metadata,
which is what error messages, the editor and ``examples/`` speak from. Settings
that differ between llama.cpp flavours (mmap, the memory budget) are written
once here and translated per build by :mod:`rpctui.llama.argv`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LOCAL = "local"
JOB_KINDS = ("bench", "cli", "completion", "server")
BUILTIN_MODEL_PREFIX = "builtin:"


def setting(default: Any = None, doc: str = "", *, required: bool = False, factory: Any = None,
            check: Any = None) -> Any:
    """A profile field: default, one-line doc, and an optional check returning an error text."""
    meta = {"doc": doc, "required": required, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else "must be a TCP port, 1 to 65535"


def _positive(v: int | float) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _not_negative(v: int | float) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _ipv4(v: str) -> str | None:
    parts = v.split(".")
    if len(parts) == 4 and all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
        return None
    return "must be a numeric IPv4 address (rpc-server binds only to those), e.g. 127.0.0.1"


TRANSPORTS = ("tcp", "ssh")


def _transport(v: str) -> str | None:
    return None if v in TRANSPORTS else f"must be one of: {', '.join(TRANSPORTS)}"


def _backend(v: str) -> str | None:
    return None if v in ("cpu", "cuda", "vulkan", "rocm") else "must be cpu, cuda, vulkan or rocm"


def _job_kind(v: str) -> str | None:
    return None if v in JOB_KINDS else f"must be one of: {', '.join(JOB_KINDS)}"


def _counts(v: list[int]) -> str | None:
    if any(n < 0 for n in v):
        return "server counts must be 0 or more (0: the main node alone, the local baseline)"
    if len(set(v)) != len(v):
        return "has a server count twice"
    return None


@dataclass(frozen=True)
class Server:
    """One rpc-server process on a node."""

    port: int = setting(50052, "TCP port the server listens on", check=_port)
    bind: str = setting("127.0.0.1", "address to bind (-H); anything but 127.0.0.1 exposes an "
                        "unauthenticated port to that network", check=_ipv4)
    devices: list[str] = setting(doc="backend devices for -d, e.g. [\"CUDA0\"] or [\"Vulkan1\"]",
                                 factory=list)
    threads: int | None = setting(None, "CPU threads (-t)", check=_positive)
    cache: bool = setting(False, "keep received tensors in the local file cache (-c)")
    cache_fill: bool = setting(False, "with cache: fill the cache before the job from a copy of "
                               "the model on this node (job.model's path there; `rpctui models "
                               "push` puts it), so the first load sends hashes, not weights")
    cache_limit_gib: float | None = setting(None, "with cache: keep the cache directory under "
                                            "this size (the oldest files go first)",
                                            check=_positive)
    memory_mib: int | None = setting(None, "memory budget in MiB: passed as -m where the build has "
                                     "it (it only steers the default split)", check=_positive)
    address_space_limit_mib: int | None = setting(
        None, "hard cap on the server's virtual memory (ulimit -v), for CPU servers",
        check=_positive)
    env: dict[str, str] = setting(doc="extra environment, e.g. GGML_VK_VISIBLE_DEVICES",
                                  factory=dict)
    extra_args: list[str] = setting(doc="further rpc-server arguments, passed as written",
                                    factory=list)


@dataclass(frozen=True)
class Node:
    """A machine reached over SSH (or this machine, with host = "local")."""

    host: str = setting(None, "host name, address or ~/.ssh/config alias; \"local\" for this machine",
                        required=True)
    name: str = setting("", "a short name shown in tables (defaults to host)")
    main: bool = setting(False, "this node runs the job (llama-bench, llama-cli, ...)")
    user: str | None = setting(None, "SSH user (default: ~/.ssh/config, then your login)")
    ssh_port: int | None = setting(None, "SSH port (default: ~/.ssh/config, then 22)", check=_port)
    key: str | None = setting(None, "SSH private key file (default: ~/.ssh/config and the agent)")
    known_hosts: str | None = setting(None, "known_hosts file that verifies the host key "
                                      "(default: ~/.ssh/known_hosts)")
    address: str | None = setting(None, "address the main node uses to reach this node's servers "
                                  "when they bind 0.0.0.0 (default: host)")
    bin_dir: str | None = setting(None, "directory holding the llama.cpp binaries "
                                  "(default: PATH on the node)")
    build: str | None = setting(None, "use rpctui's own llama.cpp build of this flavour "
                                "(mainline, b6110, ik) for its backend: built here for this "
                                "machine, and for other nodes by `rpctui build PROFILE` into "
                                "build_dir there")
    build_dir: str | None = setting(None, "where `rpctui build PROFILE` builds and installs "
                                    "llama.cpp on this node (default ~/.cache/rpctui/llama)")
    backend: str | None = setting(None, "what rpctui builds `build` for on this node: cpu, "
                                  "cuda, vulkan or rocm (default: its servers' devices, else "
                                  "its drivers)", check=_backend)
    python: str = setting("python3", "Python on the node, for probes and the sampler")
    connect_timeout_s: float = setting(10.0, "seconds to wait for the SSH connection",
                                       check=_positive)
    keepalive_s: float = setting(3.0, "seconds between SSH keepalives while connected; three "
                                 "unanswered end the connection, so a node that drops off "
                                 "the network is noticed after 4 x this (longer for a flaky "
                                 "link, shorter to notice sooner)", check=_positive)
    env: dict[str, str] = setting(doc="environment for every process rpctui starts here",
                                  factory=dict)
    servers: list[Server] = setting(doc="rpc-servers on this node", factory=list)
    transport: str | None = setting(None, "how the main node reaches this node's servers: "
                                    "\"tcp\" (straight to the port) or \"ssh\" (the servers bind "
                                    "127.0.0.1 and the main node, which must be this machine, "
                                    "reaches them through SSH: the unauthenticated port never "
                                    "faces the network); default: the profile's transport",
                                    check=_transport)
    #: for transport "ssh": the loopback address on this machine whose ports lead to this
    #: node's servers (127.77.N.1, one per node; set when the profile is loaded)
    tunnel: str = field(default="", compare=False, metadata={"internal": True})

    @property
    def label(self) -> str:
        return self.name or self.host

    @property
    def is_local(self) -> bool:
        return self.host == LOCAL


@dataclass(frozen=True)
class TensorOverride:
    """One -ot rule: tensors whose name matches ``pattern`` go to a buffer or a server."""

    pattern: str = setting(None, "regular expression searched in tensor names", required=True)
    buffer: str | None = setting(None, "buffer type as llama.cpp names it, e.g. CPU or CUDA0")
    server: str | None = setting(None, "a server of this profile, as node:port")
    device: int = setting(0, "device index on that server", check=_not_negative)


@dataclass(frozen=True)
class Job:
    """What runs on the main node against the servers."""

    model: str = setting(None, "GGUF path on the main node (first shard of a split model), or "
                         "builtin:tiny for the generated test model", required=True)
    model_source: str | None = setting(None, "a copy of the model on this machine (first shard "
                                       "of a split one) that `rpctui models push` copies to "
                                       "`model` on the nodes that need it")
    push_model: bool = setting(False, "push model_source before every run (skipped, after a "
                               "hash check, where the node has it already)")
    push_over: str = setting("tcp", "how pushed models travel: \"tcp\" (a direct stream to a "
                             "one-time listener, falling back to SSH) or \"ssh\" (SFTP on the "
                             "SSH connection, encrypted); nodes with transport \"ssh\" always "
                             "use SSH", check=_transport)
    kind: str = setting("bench", "bench, cli (one-shot), completion or server", check=_job_kind)
    ngl: int | None = setting(None, "layers to offload (-ngl); -1 or 999 for all")
    flash_attn: bool | None = setting(None, "flash attention on or off (-fa)")
    mmap: bool | None = setting(None, "map the model file (false: read it; HIP users want false)")
    fit: bool | None = setting(None, "mainline --fit: let llama.cpp rewrite unset -ngl/-ts/-c")
    tensor_split: list[float] = setting(doc="split fractions, one per device: servers in profile "
                                        "order, then the main node's own GPUs", factory=list)
    override_tensors: list[TensorOverride] = setting(doc="-ot rules", factory=list)
    ctx_size: int | None = setting(None, "context size (-c)", check=_positive)
    batch_size: int | None = setting(None, "logical batch (-b)", check=_positive)
    ubatch_size: int | None = setting(None, "physical batch (-ub)", check=_positive)
    threads: int | None = setting(None, "CPU threads on the main node (-t)", check=_positive)
    cache_type_k: str | None = setting(None, "K cache type (-ctk), e.g. q8_0")
    cache_type_v: str | None = setting(None, "V cache type (-ctv), needs flash attention")
    prompt_tokens: list[int] = setting(doc="bench: prompt sizes (-p)", factory=list)
    gen_tokens: list[int] = setting(doc="bench: generation sizes (-n)", factory=list)
    repetitions: int | None = setting(None, "bench: repetitions (-r)", check=_positive)
    depth: list[int] = setting(doc="bench: context depths (-d)", factory=list)
    prompt: str = setting("Once upon a time", "cli/completion: the prompt")
    n_predict: int = setting(32, "cli/completion: tokens to generate", check=_positive)
    server_port: int = setting(8080, "server: HTTP port of llama-server", check=_port)
    restart_limit: int = setting(3, "server (rpctui serve): restarts after a crash before "
                                 "giving up", check=_not_negative)
    restart_backoff_s: float = setting(2.0, "server (rpctui serve): wait before the first "
                                       "restart, doubled for each after it", check=_not_negative)
    health_timeout_s: float = setting(600.0, "server (rpctui serve): how long llama-server may "
                                      "take to load and answer /health", check=_positive)
    timeout_s: float | None = setting(None, "stop the job after this many seconds", check=_positive)
    extra_args: list[str] = setting(doc="further arguments for the job's tool", factory=list)

    @property
    def builtin_model(self) -> str | None:
        if self.model.startswith(BUILTIN_MODEL_PREFIX):
            return self.model[len(BUILTIN_MODEL_PREFIX):]
        return None


#: Settings a sweep may not change: one model and job kind per run, and the servers' addresses
#: (the --rpc list and every link stay the same from step to step).
FIXED_JOB_KEYS = ("model", "model_source", "push_model", "push_over", "kind", "server_port", "timeout_s",
                  "restart_limit", "restart_backoff_s", "health_timeout_s")
FIXED_SERVER_KEYS = ("port", "bind")


@dataclass(frozen=True)
class Variant:
    """One named setup of a sweep: job settings and settings for every server."""

    name: str = setting("", "its name in results (default: the settings it changes)")
    job: dict[str, Any] = setting(doc="job settings, e.g. { batch_size = 512, flash_attn = true }",
                                  factory=dict)
    servers: dict[str, Any] = setting(doc="settings for every server, e.g. { cache = true }",
                                      factory=dict)


@dataclass(frozen=True)
class SweepStep:
    """One setup a sweep runs, resolved and checked when the profile is loaded."""

    name: str  #: "" for the profile as written
    job: Job
    servers: dict[str, Any]  #: settings changed on every server (converted, checked)


@dataclass(frozen=True)
class Sweep:
    """Run the job over several setups: server counts (seed 000's scaling table), a grid of job
    and server settings, or named variants; each setup is a step of one run."""

    servers: list[int] = setting(doc="server counts, e.g. [0, 1, 2, 3, 4]; 0 runs the job on "
                                 "the main node alone, the local baseline every step is "
                                 "compared with", factory=list, check=_counts)
    job: dict[str, list[Any]] = setting(doc="a grid over job settings, each a list of values, "
                                        "e.g. { batch_size = [512, 2048], flash_attn = [true, "
                                        "false] }: every combination runs", factory=dict)
    server: dict[str, list[Any]] = setting(doc="a grid over settings of every server, e.g. "
                                           "{ cache = [false, true] }", factory=dict)
    variants: list[Variant] = setting(doc="named setups instead of a grid", factory=list)
    #: the setups, resolved by the loader (the profile as written when there is no grid)
    steps: tuple[SweepStep, ...] = field(default=(), compare=False,
                                         metadata={"internal": True})


@dataclass(frozen=True)
class Profile:
    """A whole launch setup."""

    nodes: list[Node] = setting(doc="the machines", factory=list)
    job: Job = setting(None, "the job", required=True)
    name: str = setting("", "a name for runs of this profile")
    description: str = setting("", "free text")
    allow_mixed_builds: bool = setting(False, "start even when nodes run different llama.cpp "
                                       "builds (they usually crash each other)")
    sample_interval_s: float = setting(0.5, "seconds between telemetry samples on every node; "
                                       "0 turns sampling off", check=_not_negative)
    warn_memory_pct: float = setting(90.0, "warn when a node's memory use passes this percent",
                                     check=_positive)
    headroom_mib: float = setting(512.0, "memory to keep free on each node when predicting "
                                  "whether a load fits", check=_not_negative)
    sweep: Sweep | None = setting(None, "optional sweep over server counts")
    transport: str = setting("tcp", "how the main node reaches the servers, for nodes that do "
                             "not say: \"tcp\" or \"ssh\" (see the nodes' transport)",
                             check=_transport)
    breakdown: bool = setting(False, "bench jobs: measure where each token's time goes (a short "
                              "link test before the servers start, llama-bench --progress, the "
                              "servers' command log counted on their nodes)")
    link_test_s: float = setting(0.5, "seconds each way of the throughput test before a run "
                                 "with breakdown on (0: round trips only)", check=_not_negative)
    path: str = field(default="", compare=False, metadata={"internal": True})

    @property
    def main_node(self) -> Node:
        return next(n for n in self.nodes if n.main)

    def sweep_plan(self) -> list[tuple[int, SweepStep]]:
        """The job's steps: (server count, setup), setup by setup so that servers restart only
        when their settings change; one step, the profile as written, without a sweep."""
        n_all = len(self.servers())
        base = SweepStep("", self.job, {})
        if self.sweep is None:
            return [(n_all, base)]
        counts = self.sweep.servers or [n_all]
        return [(n, s) for s in (self.sweep.steps or (base,)) for n in counts]

    def servers(self) -> list[tuple[Node, Server]]:
        """Every server in profile order: the order of the job's --rpc list."""
        return [(node, server) for node in self.nodes for server in node.servers]


def endpoint_host(node: Node, server: Server) -> str:
    """The address the job's --rpc list uses for this server."""
    if node.tunnel:
        return node.tunnel
    if server.bind != "0.0.0.0":
        return server.bind
    if node.address:
        return node.address
    return "127.0.0.1" if node.is_local else node.host


def endpoint(node: Node, server: Server) -> str:
    return f"{endpoint_host(node, server)}:{server.port}"
