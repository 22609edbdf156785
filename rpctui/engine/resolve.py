"""What a run needs on disk before it starts: the llama.cpp binaries (rpctui's own build when the
profile asks) and the model (a builtin one is generated here first)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rpctui.errors import ExitCode, UserError
from rpctui.profile.schema import Node, Profile


async def resolve_bin_dirs(node: Node, progress: Callable[[str, float | None], None] | None
                           ) -> list[str]:
    """The directories to search for binaries on a node; builds rpctui's own when asked."""
    if node.bin_dir:
        return [node.bin_dir]
    if node.build and not node.is_local:
        from rpctui.engine.provision import node_bin_dir

        return [node_bin_dir(node)]  # what `rpctui build PROFILE` installed there
    if node.build:
        from rpctui.engine.provision import backend_of
        from rpctui.llama.build import ensure_build, local_backend_cmake

        # this machine: the profile's backend, else its servers' devices (no drivers asked)
        flags = local_backend_cmake(backend_of(node, {}))
        build = await asyncio.to_thread(ensure_build, node.build, flags, progress)
        return [str(build.bin_dir)]
    return []


async def resolve_model(profile: Profile) -> str:
    """The model path on the main node; a builtin model is generated here first."""
    job = profile.job
    name = job.builtin_model
    if name is None:
        return job.model
    from rpctui.llama.tinymodel import BUILTIN, ensure_model

    if name not in BUILTIN:
        raise UserError(f"{profile.path}: job.model: no builtin model {name!r}",
                        f"use one of: {', '.join('builtin:' + n for n in BUILTIN)}")
    if not profile.main_node.is_local:
        raise UserError(f"{profile.path}: job.model: builtin models exist on this machine only, "
                        f"but the main node is {profile.main_node.label}",
                        "copy the model to the main node and give its path", ExitCode.USAGE)
    return str(await asyncio.to_thread(ensure_model, name))
