"""Secrets kept out of everything rpctui writes or shows: recordings, the run database, logs
and the app see argv and environments with secret-looking values replaced.

A value is taken for a secret when its name says so: a flag or variable whose name holds
TOKEN, KEY, SECRET, PASSWORD, PASSWD or CREDENTIAL (llama-server's --api-key, --hf-token,
HF_TOKEN in an environment), and llama.cpp's short form -hft. Names that merely contain the
letters (--keep, tokenizer.ggml.* in an --override-kv value) are not secrets: flags must start
with a dash and variables be upper case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rpctui.profile.schema import Profile

HIDDEN = "***"
_SECRET = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
_SHORT_FLAGS = frozenset({"-hft"})  #: llama.cpp's short names for secret flags
_ENV_ITEM = re.compile(r"^([A-Z_][A-Z0-9_]*)=")


def secret_name(name: str) -> bool:
    """Whether a flag (``--api-key``) or variable name (``HF_TOKEN``) names a secret."""
    return name in _SHORT_FLAGS or bool(_SECRET.search(name))


def redact_argv(argv: Iterable[str]) -> tuple[str, ...]:
    """argv with the value of every secret flag hidden (``--api-key X``, ``--api-key=X``) and
    every secret ``NAME=value`` item (as ``env`` takes them)."""
    out: list[str] = []
    hide_next = False
    for item in argv:
        if hide_next:
            out.append(HIDDEN)
            hide_next = False
            continue
        if item.startswith("-"):
            flag, eq, _value = item.partition("=")
            if secret_name(flag):
                if eq:
                    out.append(f"{flag}={HIDDEN}")
                else:
                    out.append(item)
                    hide_next = True
                continue
        elif (m := _ENV_ITEM.match(item)) and secret_name(m.group(1)):
            out.append(f"{m.group(1)}={HIDDEN}")
            continue
        out.append(item)
    return tuple(out)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: HIDDEN if secret_name(k) else v for k, v in env.items()}


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of these secret values hidden (a log line that echoes one)."""
    for value in secrets:
        if len(value) >= 4:  # shorter values would hide too much that is not them
            text = text.replace(value, HIDDEN)
    return text


def secret_values(argv: Iterable[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The values redact_argv and redact_env hide, to look for in the output they cause."""
    items = list(argv)
    found = [v for k, v in (env or {}).items() if secret_name(k) and v]
    for i, item in enumerate(items):
        if item.startswith("-"):
            flag, eq, value = item.partition("=")
            if secret_name(flag):
                if eq:
                    found.append(value)
                elif i + 1 < len(items):
                    found.append(items[i + 1])
        elif (m := _ENV_ITEM.match(item)) and secret_name(m.group(1)):
            found.append(item[m.end():])
    return [v for v in found if v]


def profile_secrets(profile: Profile) -> list[str]:
    """The secret values a profile passes on (environments, extra arguments), longest first."""
    found = secret_values(profile.job.extra_args)
    for node in profile.nodes:
        found += secret_values([], node.env)
        for server in node.servers:
            found += secret_values(server.extra_args, server.env)
    return sorted(set(found), key=len, reverse=True)
