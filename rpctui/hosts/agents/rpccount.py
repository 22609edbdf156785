# rpctui rpc-server counter: started as "python3 -S -c SOURCE PROGRAM ARGS...", it runs the
# rpc-server (PROGRAM, started with GGML_RPC_DEBUG=1) in its own place and counts the server's
# per-command debug lines on the node, so that only the counts, not a line per command, cross
# the network: the breakdown's round trips and tensor bytes at the cost of a pipe.
#
# The process forks: the parent becomes PROGRAM (same PID, so the launcher's child, exit code
# and OOM lookups are the server's own), its stdout and stderr into a pipe; the child reads the
# pipe (every BATCH_S, not at every line), forwards every other line to the original stdout, and
# keeps the counts in a small file
# the node's sampler reads at each sample: struct "<5q" = sequence (odd while writing),
# commands, answered commands after set-up, tensor bytes to the server, tensor bytes from it.
# The child names itself "rpctui-count" (the sampler leaves it out of the server's memory and
# CPU), ignores TERM, INT and HUP (it ends when the server's output does, having passed on
# its last lines) and removes the file when it ends.
# Standard library only. CONFIG is prepended by the sender.
import fcntl
import mmap
import os
import re
import signal
import struct
import sys
import time

cfg = CONFIG  # noqa: F821 - the sender puts CONFIG before this source
COMMANDS = frozenset(c.encode() for c in cfg["commands"])
REPLIES = frozenset(c.encode() for c in cfg["replies"]) - frozenset(c.encode() for c in cfg["setup"])
LINE = re.compile(rb"\[(\w+)\] ")
SIZE = re.compile(rb", size: (\d+)")
LAYOUT = struct.Struct("<5q")
CHUNK = 1 << 16
#: The relay reads at most this often: the server flushes a line per command (a thousand a
#: second and more while generating), and a reader waiting on the pipe would be woken for each
#: one, on the CPUs the server computes on. Asleep, it lets them gather in the pipe.
BATCH_S = float(cfg.get("batch_s", 0.02))
PIPE_BYTES = 1 << 20  #: room for a load's burst of lines while the relay sleeps


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def counts_file(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.ftruncate(fd, LAYOUT.size)
    mm = mmap.mmap(fd, LAYOUT.size)
    os.close(fd)
    return mm


def relay(fd, mm):
    """Forward fd's lines to stdout but the command lines, which are counted into mm."""
    commands = replies = to_server = from_server = seq = 0
    rest = b""
    while True:
        try:
            chunk = os.read(fd, CHUNK)
        except InterruptedError:
            continue
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        keep = []
        for line in lines:
            m = LINE.match(line)
            name = m.group(1) if m else None
            if name not in COMMANDS:
                keep.append(line)
                continue
            commands += 1
            if name in REPLIES:
                replies += 1
            if name == b"set_tensor" or name == b"get_tensor":
                size = SIZE.search(line)
                if size:
                    if name == b"set_tensor":
                        to_server += int(size.group(1))
                    else:
                        from_server += int(size.group(1))
        if len(rest) > CHUNK:  # no line end in sight: pass it on as it is
            keep.append(rest)
            rest = b""
        if mm is not None:
            seq += 2
            LAYOUT.pack_into(mm, 0, seq - 1, commands, replies, to_server, from_server)
            struct.pack_into("<q", mm, 0, seq)
        if keep:
            write_all(1, b"\n".join(keep) + b"\n")
        if len(chunk) < CHUNK:
            time.sleep(BATCH_S)
    if rest:
        write_all(1, rest)


def main():
    argv, path = sys.argv[1:], cfg["path"]
    try:
        mm = counts_file(path)
    except OSError as e:
        mm = None
        sys.stderr.write(f"rpctui: cannot keep the RPC command counts in {path}: {e}\n")
    r, w = os.pipe()
    try:
        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        pass  # a smaller pipe: a burst may make the server wait for the relay
    if os.fork():
        os.close(r)
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            sys.stderr.write(f"rpctui: cannot run {argv[0]}: {e}\n")
            os._exit(127)
    os.close(w)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        with open("/proc/self/comm", "w") as fh:
            fh.write("rpctui-count")
    except OSError:
        pass
    try:
        relay(r, mm)
    finally:
        if mm is not None:
            try:
                os.unlink(path)
            except OSError:
                pass


main()
