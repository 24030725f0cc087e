"""Fuzz ``airi.load`` with damaged and crafted model files.

Every case must end in one of two ways: the file loads (and its repr can be printed), or
``airi.load`` raises ``airi.ModelFileError``. Anything else is a failure: another
exception, a crash, using more memory than ``--memory-mb`` (the whole run is under that
RLIMIT_AS) or more time than ``--case-seconds`` for one case (SIGALRM).

Cases are made from files written by ``airi.save`` (a model with every kind of layer, a
Trainer checkpoint, plain values): bit flips, random bytes, byte insertions and
deletions, truncations, splices of two files, and pickle opcodes written over the
stream. Most cases get their header's checksum recomputed after the damage, so that
the unpickler and the checks behind it see the damaged stream (a checksum mismatch
would otherwise refuse nearly all of them at once); the rest keep the original header
and must be refused by the checksum.

Usage::

    python tools/fuzz_model_files.py --iterations 20000 --seed 1      # about 10 minutes
    python tools/fuzz_model_files.py --iterations 400 --out failing/  # keep failing files

Exit status 0 when every case passed; the last line says ``N failures``.
"""
import argparse
import os
import resource
import signal
import sys
import tempfile
import time
import zlib

import numpy as np

MAGIC = b"AIRI-MODEL\n"


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def corpus(folder):
    """Model files written by airi.save, as bytes."""
    import airi
    from airi.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dropout,
                             Flatten, LeakyRelu, Linear, MaxPool2D, Relu, Sigmoid, Tanh)
    airi.seed(0)
    model = airi.Sequential([
        Conv2D(1, 4, 3, pad=1), BatchNorm2D(4), Relu(), MaxPool2D(2),
        Conv2D(4, 4, (3, 1), pad=(1, 0)), LeakyRelu(0.1), AvgPool2D(2), Flatten(),
        Dropout(0.5), Linear(16, 8), BatchNorm1D(8), Tanh(), Linear(8, 3), Sigmoid()])
    opt = airi.optim.Adam(model.parameters(), lr=1e-3)
    sched = airi.lr_scheduler.StepLR(opt, step_size=2)
    x = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)
    y = np.arange(6) % 3
    trainer = airi.Trainer(model, airi.CrossEntropyLoss(), opt, scheduler=sched,
                           verbose=False)
    checkpoint = os.path.join(folder, "checkpoint.pkl")
    trainer.fit((x, y), epochs=1, batch_size=3, checkpoint_path=checkpoint)
    files = [checkpoint]
    for name, obj in [("model.pkl", model), ("optimizer.pkl", opt),
                      ("values.pkl", {"a": [1, 2.5, "x", b"y", None, (3, 4)],
                                      "arr": np.arange(12, dtype=np.int16).reshape(3, 4),
                                      "set": {1, 2}, "c": 1 + 2j})]:
        path = os.path.join(folder, name)
        airi.save(obj, path)
        files.append(path)
    out = []
    for path in files:
        with open(path, "rb") as f:
            out.append(f.read())
    return out


def split(data):
    """(header lines, payload) of a model file."""
    end = data.index(b"\n", len(MAGIC)) + 1
    return data[:end], data[end:]


def with_checksum(payload):
    return (MAGIC + b"format=2 airi=0.1.0 bytes=%d crc32=%08x\n"
            % (len(payload), zlib.crc32(payload)) + payload)


OPCODES = [bytes([op.code.encode("latin-1")[0]]) for op in
           __import__("pickletools").opcodes]


def mutate(rng, files):
    """One damaged file, and a label saying how it was made."""
    header, payload = split(files[rng.integers(len(files))])
    payload = bytearray(payload)
    kind = rng.choice(["flip", "bytes", "insert", "delete", "truncate", "splice",
                       "opcode", "duplicate"])
    n = len(payload)
    if kind == "flip":
        for pos in rng.integers(0, n, size=rng.integers(1, 5)):
            payload[pos] ^= 1 << int(rng.integers(8))
    elif kind == "bytes":
        for pos in rng.integers(0, n, size=rng.integers(1, 5)):
            payload[pos] = int(rng.integers(256))
    elif kind == "insert":
        pos = int(rng.integers(n))
        payload[pos:pos] = rng.bytes(int(rng.integers(1, 9)))
    elif kind == "delete":
        pos = int(rng.integers(n))
        del payload[pos:pos + int(rng.integers(1, 9))]
    elif kind == "truncate":
        del payload[int(rng.integers(n)):]
    elif kind == "splice":
        _, other = split(files[rng.integers(len(files))])
        payload = payload[:int(rng.integers(n))] + other[int(rng.integers(len(other))):]
    elif kind == "opcode":
        for pos in rng.integers(0, n, size=rng.integers(1, 4)):
            payload[pos:pos + 1] = OPCODES[int(rng.integers(len(OPCODES)))]
    else:
        start = int(rng.integers(n))
        length = int(rng.integers(1, 64))
        pos = int(rng.integers(n))
        payload[pos:pos] = payload[start:start + length]
    fixed = rng.random() < 0.8
    data = with_checksum(bytes(payload)) if fixed else header + bytes(payload)
    return data, f"{kind}{'+checksum' if fixed else ''}"


def run_case(path, case_seconds):
    """'loaded' or 'refused', or raises (a failure)."""
    import airi
    signal.alarm(case_seconds)
    try:
        try:
            obj = airi.load(path)
        except airi.ModelFileError:
            return "refused"
        repr(obj)
        return "loaded"
    finally:
        signal.alarm(0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-mb", type=int, default=2048,
                        help="address-space limit of this process (RLIMIT_AS)")
    parser.add_argument("--case-seconds", type=int, default=20)
    parser.add_argument("--out", help="folder to keep the files of failing cases in")
    args = parser.parse_args(argv)

    limit = args.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import warnings
    warnings.simplefilter("ignore")

    rng = np.random.default_rng(args.seed)
    counts = {"loaded": 0, "refused": 0}
    failures = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        files = corpus(folder)
        path = os.path.join(folder, "case.pkl")
        for i in range(args.iterations):
            data, label = mutate(rng, files)
            with open(path, "wb") as f:
                f.write(data)
            try:
                counts[run_case(path, args.case_seconds)] += 1
            except BaseException as exc:   # noqa: B036 (MemoryError, timeouts: failures)
                if isinstance(exc, KeyboardInterrupt):
                    raise
                what = ("no result within the time limit" if isinstance(exc, CaseTimeout)
                        else f"{type(exc).__name__}: {str(exc)[:200]}")
                failures.append((i, label, what))
                print(f"FAIL case {i} ({label}): {what}", flush=True)
                if args.out:
                    os.makedirs(args.out, exist_ok=True)
                    with open(os.path.join(args.out, f"case{i}.pkl"), "wb") as f:
                        f.write(data)
    seconds = time.perf_counter() - start
    print(f"{args.iterations} cases in {seconds:.1f} s (seed {args.seed}): "
          f"{counts['loaded']} loaded, {counts['refused']} refused with ModelFileError, "
          f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
