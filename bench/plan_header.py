"""Planning a large model reads its header only: the time to read a 104 GB, 1,000-tensor GGUF.

The file is a header (a 150,000-entry vocabulary, Llama-70B-like tensors in Q8_0) followed by
a sparse hole as long as the data: nothing but the header is on disk. Prints the time
`rpctui.plan.gguf.read_model` takes, the best of five, and the bytes it read.

    .venv/bin/python bench/plan_header.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rpctui.plan.gguf import read_model  # noqa: E402 - after the sys.path line above


def write_huge(path: Path) -> tuple[int, int]:
    """The 104 GB sparse model at ``path``: (its header's bytes, its tensors' data bytes)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    layers, embd, ff = 111, 8192, 28672
    writer.add_block_count(layers)
    writer.add_embedding_length(embd)
    writer.add_head_count(64)
    writer.add_head_count_kv(8)
    writer.add_context_length(8192)
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(150_000)])
    shapes = {"token_embd.weight": (150_000, embd), "output.weight": (150_000, embd),
              "output_norm.weight": (embd,)}
    for i in range(layers):
        shapes.update({f"blk.{i}.attn_q.weight": (embd, embd), f"blk.{i}.attn_k.weight": (1024, embd),
                       f"blk.{i}.attn_v.weight": (1024, embd), f"blk.{i}.attn_output.weight": (embd, embd),
                       f"blk.{i}.ffn_gate.weight": (ff, embd), f"blk.{i}.ffn_up.weight": (ff, embd),
                       f"blk.{i}.ffn_down.weight": (embd, ff), f"blk.{i}.attn_norm.weight": (embd,),
                       f"blk.{i}.ffn_norm.weight": (embd,)})
    total = 0
    for name, shape in list(shapes.items())[:1000]:
        q8 = len(shape) == 2
        n = int(np.prod(shape))
        nbytes = n // 32 * 34 if q8 else n * 4
        writer.add_tensor_info(name, shape[::-1], np.dtype(np.float32), nbytes,
                               raw_dtype=gguf.GGMLQuantizationType.Q8_0 if q8 else None)
        total += nbytes
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header = path.stat().st_size
    # as long as a real file: each tensor's data padded to the 32-byte alignment
    os.truncate(path, header + total + 32 * len(shapes))
    return header, total


def bytes_read() -> int:
    """Bytes this process has read through read() and its kin (/proc/self/io rchar)."""
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(io["rchar"])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.gguf"
        header, total = write_huge(path)
        times = []
        for _ in range(5):
            before, start = bytes_read(), time.perf_counter()
            read_model(path)
            times.append(time.perf_counter() - start)
            read = bytes_read() - before
        print(f"read_model on a {path.stat().st_size / 1e9:.0f} GB model ({header / 2**20:.1f} MiB "
              f"header): best {1000 * min(times):.0f} ms, worst {1000 * max(times):.0f} ms of 5; "
              f"{read / 2**20:.1f} MiB read")


if __name__ == "__main__":
    main()
