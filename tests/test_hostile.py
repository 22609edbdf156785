"""Hostile and broken input, fuzzed with hypothesis: every case ends in one clear error (the
documented exit code, no traceback), in bounded time and memory.

The GGUF cases start from a real file written by gguf's own writer (the library llama.cpp's
convert scripts use), whose header is then cut, overwritten or given lying counts.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rpctui.plan.gguf import HEADER_MAX_BYTES, ModelFileError, _Header, read_model
from tests.conftest import rpctui

#: what one hostile input may cost: the header bound plus the parser's own, and time
MEMORY_BOUND = HEADER_MAX_BYTES + (16 << 20)
TIME_BOUND_S = 5.0
#: 120 cases a test, the same each run (derandomized: CI stays repeatable); RPCTUI_FUZZ=N
#: asks for more, with fresh randomness (the runs in docs/PERFORMANCE.md used 5000)
_EXAMPLES = int(os.environ.get("RPCTUI_FUZZ", "0"))
FUZZ = settings(max_examples=_EXAMPLES or 120, deadline=None, derandomize=not _EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _small_gguf(path: Path) -> Path:
    """A two-layer llama GGUF with a 40-token vocabulary, F32 zeros for weights (about 30 kB)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(256)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(40)])
    w.add_token_scores([0.0] * 40)
    w.add_token_types([1] * 40)
    w.add_tensor("token_embd.weight", np.zeros((40, 32), np.float32))
    for i in range(2):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.zeros(32, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((32, 32), np.float32))
        w.add_tensor(f"blk.{i}.attn_k.weight", np.zeros((16, 32), np.float32))
        w.add_tensor(f"blk.{i}.attn_v.weight", np.zeros((16, 32), np.float32))
        w.add_tensor(f"blk.{i}.attn_output.weight", np.zeros((32, 32), np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.zeros(32, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", np.zeros((64, 32), np.float32))
        w.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((64, 32), np.float32))
        w.add_tensor(f"blk.{i}.ffn_down.weight", np.zeros((32, 64), np.float32))
    w.add_tensor("output_norm.weight", np.zeros(32, np.float32))
    w.add_tensor("output.weight", np.zeros((40, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


_DIR = Path(tempfile.mkdtemp(prefix="rpctui-hostile-"))
BASE = _small_gguf(_DIR / "base.gguf").read_bytes()
HEADER_END = _Header(_DIR / "base.gguf").data_start
#: values a lying count or length takes: the edges of each integer width, and huge
LIES = st.sampled_from([0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32,
                        1 << 40, (1 << 63) - 1, (1 << 64) - 1]) | st.integers(0, (1 << 64) - 1)


def _read_bounded(blob: bytes) -> str:
    """Read ``blob`` as a model: what happened ("ok" or the error's text), within the bounds."""
    path = _DIR / "fuzzed.gguf"
    path.write_bytes(blob)
    tracemalloc.start()
    started = time.monotonic()
    try:
        read_model(path)
        outcome = "ok"
    except ModelFileError as exc:
        outcome = str(exc)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.monotonic() - started < TIME_BOUND_S
    assert peak < MEMORY_BOUND, peak
    return outcome


def test_the_unharmed_file_reads() -> None:
    info = read_model(_DIR / "base.gguf")
    assert (info.arch, info.n_layer, info.n_embd, info.n_vocab) == ("llama", 2, 32, 40)
    assert len(info.tensors) == 21


@FUZZ
@given(st.integers(0, len(BASE) - 1))
def test_gguf_cut_anywhere(cut: int) -> None:
    """Cut at every field of the header and into the data: the one error says "cut short"."""
    outcome = _read_bounded(BASE[:cut])
    assert "cut short" in outcome or "not a GGUF" in outcome, outcome


@FUZZ
@given(st.integers(4, HEADER_END - 8), LIES)
def test_gguf_lying_counts_and_lengths(at: int, lie: int) -> None:
    """Any eight header bytes replaced by a count or length that lies (n_kv, n_tensors, a
    string's length, an array's count, a dimension, an offset, wherever they fall)."""
    blob = bytearray(BASE)
    struct.pack_into("<Q", blob, at, lie)
    _read_bounded(bytes(blob))


@FUZZ
@given(st.integers(0, HEADER_END - 1), st.binary(min_size=1, max_size=16))
def test_gguf_overwritten_bytes(at: int, junk: bytes) -> None:
    """Junk over any header bytes: wrong value types, wrong tensor types, broken strings."""
    blob = bytearray(BASE)
    blob[at:at + len(junk)] = junk
    _read_bounded(bytes(blob[:len(BASE)]))


@pytest.mark.parametrize("case", ["huge-array", "nested-array", "bad-type", "bad-ggml-type",
                                  "implausible-layers", "five-dims"])
def test_gguf_named_damage_is_named(case: str) -> None:
    """Each kind of damage by name, and what the error says of it."""
    blob = bytearray(BASE)
    tokens = BASE.index(b"tokenizer.ggml.tokens") + len(b"tokenizer.ggml.tokens")
    # after the key: u32 value type 9 (array), u32 element type, u64 count
    if case == "huge-array":
        struct.pack_into("<IIQ", blob, tokens, 9, 8, (1 << 62))
        expected = "past the 64 MiB"
    elif case == "nested-array":
        struct.pack_into("<II", blob, tokens, 9, 9)
        expected = "array of arrays"
    elif case == "bad-type":
        struct.pack_into("<I", blob, tokens, 77)
        expected = "value type 77"
    elif case == "bad-ggml-type":
        name = BASE.index(b"output.weight", HEADER_END - 200) + len(b"output.weight")
        struct.pack_into("<IQQI", blob, name, 2, 32, 40, 250)
        expected = "which ggml does not have"
    elif case == "implausible-layers":
        key = BASE.index(b"llama.block_count") + len(b"llama.block_count")
        struct.pack_into("<II", blob, key, 4, 0xFFFFFFFF)  # u32 4 billion layers
        expected = "llama.block_count = 4294967295"
    else:
        name = BASE.index(b"output.weight", HEADER_END - 200) + len(b"output.weight")
        struct.pack_into("<I", blob, name, 5)
        expected = "5 dimensions"
    outcome = _read_bounded(bytes(blob))
    assert expected in outcome, outcome


def _damaged_profile(tmp_path: Path, bin_dir: str = "") -> tuple[Path, Path]:
    blob = bytearray(BASE)
    tokens = BASE.index(b"tokenizer.ggml.tokens") + len(b"tokenizer.ggml.tokens")
    struct.pack_into("<IIQ", blob, tokens, 9, 8, (1 << 62))
    model = tmp_path / "damaged.gguf"
    model.write_bytes(bytes(blob))
    profile = tmp_path / "p.toml"
    build = f'bin_dir = "{bin_dir}"\n' if bin_dir else ""
    profile.write_text(f'[[nodes]]\nname = "here"\nhost = "local"\nmain = true\n{build}\n'
                       f'[job]\nmodel = "{model}"\n')
    return profile, model


def _one_clear_error(tmp_path: Path, command: str, profile: Path, model: Path) -> None:
    result = rpctui(tmp_path, command, str(profile))
    assert result.returncode == 3, result.stderr
    assert f"{model} is damaged or not a model" in result.stderr, result.stderr
    assert "fix: the file is incomplete or damaged" in result.stderr
    assert "Traceback" not in result.stderr


def test_damaged_model_is_one_clear_error_from_plan(tmp_path: Path) -> None:
    """plan on a damaged model on this machine: the error names the file and the fix, exit 3
    (the preflight's), no traceback."""
    _one_clear_error(tmp_path, "plan", *_damaged_profile(tmp_path))


@pytest.mark.parametrize("command", ["check", "run"])
def test_damaged_model_is_one_clear_error_from_check_and_run(tmp_path: Path, bins,
                                                             command: str) -> None:
    """check and run need a build to get as far as the model (without one, that is what the
    preflight names first): the same one error, exit 3, nothing started."""
    _one_clear_error(tmp_path, command, *_damaged_profile(tmp_path, bins["mainline"]))


# -- profiles ------------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: odd values for any key: wrong types, huge and non-finite numbers, odd unicode, path tricks
ODD = st.one_of(
    st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=40),
    st.sampled_from(["", "../../../../etc/passwd", "/dev/zero", "~", "a\x00b", "\u202eevil",
                     "x" * 5000, "builtin:", "builtin:nonesuch", "-rf", "--rpc", "$(reboot)",
                     "🦙", "CUDA0;rm -rf /", "127.0.0.1:0", "[::1]", "*", "\\\\server\\share"]),
    st.lists(st.integers(-(1 << 70), 1 << 70), max_size=4), st.lists(st.text(max_size=8), max_size=4),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3))


def _profile_tables() -> list[tuple[str, ...]]:
    """Every key path of the examples (tables and array-of-table entries by index)."""
    import tomllib

    paths: list[tuple[str, ...]] = []

    def walk(value: object, path: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                paths.append((*path, k))
                walk(v, (*path, k))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, v in enumerate(value):
                walk(v, (*path, str(i)))

    for toml in sorted(EXAMPLES.glob("*.toml")):
        walk(tomllib.loads(toml.read_text()), (toml.name,))
    return paths


KEY_PATHS = _profile_tables()


def _load_bounded(text: str) -> None:
    from rpctui.errors import UserError
    from rpctui.profile.load import parse_profile

    started = time.monotonic()
    try:
        parse_profile(text, "fuzzed.toml")
    except UserError as exc:
        assert exc.message and "fuzzed.toml" in str(exc)
    assert time.monotonic() - started < TIME_BOUND_S


@FUZZ
@given(st.sampled_from(KEY_PATHS), ODD)
@example(("strix-halo-4x-vulkan.toml", "sweep", "servers"), [""])  # found by a 3000-case run
def test_profile_any_key_given_an_odd_value(path: tuple[str, ...], value: object) -> None:
    """Every key of every example given a value of the wrong type, out of range, huge, or
    strange text: the profile loads or is refused with its problems listed, nothing else."""
    import tomllib

    import tomlkit

    raw = tomllib.loads((EXAMPLES / path[0]).read_text())
    where: object = raw
    for part in path[1:-1]:
        where = where[int(part)] if isinstance(where, list) else where[part]  # type: ignore[index]
    assert isinstance(where, dict)
    if isinstance(value, str) and "\x00" in value and path[-1] == "name":
        value = value.replace("\x00", "")
    where[path[-1]] = value
    try:
        text = tomlkit.dumps(raw)
    except (ValueError, TypeError):  # a value TOML cannot hold (nan is fine, None is not)
        return
    _load_bounded(text)


@FUZZ
@given(st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_profile_that_is_not_toml(text: str) -> None:
    _load_bounded(text)


@FUZZ
@given(st.sampled_from(sorted(EXAMPLES.glob("*.toml"))), st.data())
def test_profile_cut_anywhere(example: Path, data: st.DataObject) -> None:
    text = example.read_text()
    _load_bounded(text[:data.draw(st.integers(0, len(text)))])


# -- recordings ------------------------------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _one_of_each() -> list[dict[str, object]]:
    """The first event of each type from the real recordings in fixtures/ (RunStarted first)."""
    import json

    seen: dict[str, dict[str, object]] = {}
    for rec in sorted(FIXTURES.glob("*.jsonl")):
        for line in rec.read_text().splitlines():
            data = json.loads(line)
            seen.setdefault(str(data.get("type")), data)
    first = seen.pop("RunStarted")
    return [first, *seen.values()]


EVENTS = _one_of_each()
JSONABLE = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                     st.floats(allow_nan=False), st.text(max_size=20),
                     st.lists(st.integers() | st.text(max_size=5) | st.none(), max_size=6),
                     st.lists(st.lists(st.integers() | st.text(max_size=5), max_size=6), max_size=3),
                     st.dictionaries(st.text(max_size=6), st.integers(), max_size=3))


def _replay_bounded(text: str) -> None:
    from rpctui.errors import UserError
    from rpctui.history.store import read_run, result_rows, to_markdown
    from rpctui.run.state import fold_all

    path = _DIR / "fuzzed.jsonl"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    started = time.monotonic()
    try:
        state = fold_all(read_run(path))
        to_markdown(result_rows(state))
    except UserError as exc:
        assert str(path) in exc.message, exc.message
    assert time.monotonic() - started < TIME_BOUND_S


def _recording(events: list[dict[str, object]]) -> str:
    import json

    return "".join(json.dumps(e) + "\n" for e in events)


def test_one_of_each_event_replays() -> None:
    assert len(EVENTS) > 30
    _replay_bounded(_recording(EVENTS))


@FUZZ
@given(st.data())
def test_recording_with_a_field_of_the_wrong_shape(data: st.DataObject) -> None:
    """Any field of any event given a value of another type or shape."""
    events = [dict(e) for e in EVENTS]
    event = data.draw(st.sampled_from(events[1:]))
    key = data.draw(st.sampled_from(sorted(k for k in event if k != "type")))
    event[key] = data.draw(JSONABLE)
    _replay_bounded(_recording(events))


@FUZZ
@given(st.integers(0, len(_recording(EVENTS))))
def test_recording_cut_anywhere(cut: int) -> None:
    _replay_bounded(_recording(EVENTS)[:cut])


@FUZZ
@given(JSONABLE | st.sampled_from([0, 1, 2, 3, 99, -1]), st.binary(max_size=60))
def test_recording_of_another_version_or_with_junk(schema: object, junk: bytes) -> None:
    events = [dict(e) for e in EVENTS]
    events[0]["schema"] = schema
    text = _recording(events)
    _replay_bounded(text[:len(text) // 2] + junk.decode("utf-8", "surrogateescape") + "\n"
                    + text[len(text) // 2:])


# -- logs for explain --------------------------------------------------------------------------------

LOGS = sorted(p for p in FIXTURES.glob("*.log"))


def _explain_bounded(blob: bytes) -> None:
    import io

    from rpctui.llama.explain import explain_stream, render

    started = time.monotonic()
    x = explain_stream(io.BytesIO(blob), "fuzzed.log")
    render(x)
    x.to_dict()
    assert time.monotonic() - started < TIME_BOUND_S


@FUZZ
@given(st.sampled_from(LOGS), st.data())
def test_log_cut_or_spliced_with_junk(log: Path, data: st.DataObject) -> None:
    """A real log cut anywhere, with junk (binary, broken UTF-8, no line ends) spliced in."""
    text = log.read_bytes()
    cut = data.draw(st.integers(0, len(text)))
    at = data.draw(st.integers(0, cut))
    junk = data.draw(st.binary(max_size=200))
    _explain_bounded(text[:at] + junk + text[at:cut])


@FUZZ
@given(st.binary(max_size=2000))
def test_log_that_is_binary(blob: bytes) -> None:
    _explain_bounded(blob)


class _Endless:
    """A log of ``total`` bytes made on the fly, never all in memory: real log text, then
    lines of junk (text and binary), over and over, and one line of ``long_line`` bytes
    with no end."""

    def __init__(self, total: int, long_line: int) -> None:
        real = b"".join(p.read_bytes() for p in [*LOGS[:6], FIXTURES / "seed000-scaling-1.log"])
        junk = (b"llama_model_loader: - kv  42: junk " + bytes(range(32, 256)) * 4 + b"\n") * 900
        self.block, self.left, self.long_line = real + junk, total, long_line

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        if self.long_line and self.left < 2 * self.long_line:
            take = min(n if n > 0 else self.long_line, self.long_line)
            self.long_line -= take
            self.left -= take
            return b"x" * take
        self.left -= len(self.block)
        return self.block


def test_a_huge_log_is_explained_in_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of 256 KiB over a 12 MiB log with a 3 MiB line: a peak allocation of a few
    windows, not of the log. The same holds at the real window (8 MiB): bench/explain_huge.py
    streams 1 GiB (docs/PERFORMANCE.md)."""
    from rpctui.llama import explain

    monkeypatch.setattr(explain, "WINDOW_CHARS", 256 << 10)
    tracemalloc.start()
    try:
        x = explain.explain_stream(_Endless(12 << 20, 3 << 20), "huge.log")  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert x.lines > 10_000 and x.bench and x.devices and x.diagnosis
    assert peak < 6 << 20, f"{peak >> 20} MiB"


def test_a_profile_that_is_no_profile(tmp_path: Path) -> None:
    """Too big to be one, a directory, binary: one error each, exit 2, no traceback."""
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (2 << 20))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    for path, says in ((big, "over 1 MiB: not a profile"), (tmp_path, "cannot read profile"),
                       (binary, "not valid TOML")):
        result = rpctui(tmp_path, "validate", str(path))
        assert result.returncode == 2 and says in result.stderr, (path, result.stderr)
        assert "Traceback" not in result.stderr
