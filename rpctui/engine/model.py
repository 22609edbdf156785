"""The model's GGUF header, read where the model is: here, or on the main node over SSH."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from rpctui.hosts.base import Host
from rpctui.plan.gguf import HEADER_MAX_BYTES, ModelInfo, _Header, read_model, shards
from rpctui.profile.schema import Profile

MIB = 1 << 20
#: how much of a remote model file is fetched to read its header: a little first (most
#: headers are a few MiB), more only when that was not enough
HEADER_BYTES = (4 * MIB, HEADER_MAX_BYTES)


async def load_model_info(profile: Profile, model: str, host: Host) -> ModelInfo:
    """Read the GGUF header here when the main node is this machine, else fetch its start
    over the node's connection (4 MiB first, 64 MiB only when the header goes on)."""
    if profile.main_node.is_local:
        return read_model(Path(model).expanduser())

    opened: dict[Path, bytes] = {}
    sizes: dict[Path, int] = {}
    for shard in shards(model):
        stat = await host.run(["stat", "-L", "-c", "%s", str(shard)], timeout=30)
        if stat.rc == 0 and stat.stdout.strip().isdigit():
            sizes[shard] = int(stat.stdout)
        for size in HEADER_BYTES:
            result = await host.run(["sh", "-c", 'head -c "$1" "$0" | base64 -w0', str(shard),
                                     str(size)], timeout=120)
            opened[shard] = base64.b64decode(result.stdout)
            if len(opened[shard]) < size:
                break  # the whole file came
            try:
                _Header(shard, io.BytesIO(opened[shard]))
                break
            except ValueError:
                continue  # the header goes on past what was fetched
    return read_model(model, opener=lambda p: io.BytesIO(opened[p]), sizes=sizes)
