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
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


def _secrets(argv: Sequence[str]) -> Iterator[tuple[int, str, str]]:
    """(index, what stays before the hidden part, the secret) for each secret in argv: the
    value of a secret flag (``--api-key X``: the next item; ``--api-key=X``: after the =) and
    of a secret ``NAME=value`` item (as ``env`` takes them)."""
    i = 0
    while i < len(argv):
        item = argv[i]
        if item.startswith("-"):
            flag, eq, value = item.partition("=")
            if secret_name(flag):
                if eq:
                    yield i, f"{flag}=", value
                elif i + 1 < len(argv):
                    i += 1
                    yield i, "", argv[i]
        elif (m := _ENV_ITEM.match(item)) and secret_name(m.group(1)):
            yield i, item[:m.end()], item[m.end():]
        i += 1


def redact_argv(argv: Iterable[str]) -> tuple[str, ...]:
    """argv with the value of every secret flag and ``NAME=value`` item hidden."""
    out = list(argv)
    for i, kept, _ in list(_secrets(out)):
        out[i] = kept + HIDDEN
    return tuple(out)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of these secret values hidden (a log line that echoes one)."""
    for value in secrets:
        if len(value) >= 4:  # shorter values would hide too much that is not them
            text = text.replace(value, HIDDEN)
    return text


def secret_values(argv: Iterable[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The values redact_argv hides, and those of an environment's secret-named variables: to
    look for in the output they cause."""
    found = [v for k, v in (env or {}).items() if secret_name(k)]
    found += [value for _, _, value in _secrets(list(argv))]
    return [v for v in found if v]


def profile_secrets(profile: Profile) -> list[str]:
    """The secret values a profile passes on (environments, extra arguments), longest first."""
    found = secret_values(profile.job.extra_args)
    for node in profile.nodes:
        found += secret_values([], node.env)
        for server in node.servers:
            found += secret_values(server.extra_args, server.env)
    return sorted(set(found), key=len, reverse=True)
