"""What issue 16's safety costs: the model-file checksum, and the bounded collectives.

    python benchmarks/bench_hardening.py                       # checksums, save/load
    mpiexec -n 2 python benchmarks/bench_hardening.py --mpi    # collectives

Checksums: CRC-32 (zlib), SHA-256 and BLAKE2b over a 100 MB model file, and airi.save /
airi.load of that model (format 2 verifies the CRC-32 before unpickling). Collectives:
a blocking Allreduce, a non-blocking Iallreduce polled with a deadline, and what airi
does (a polled Ibarrier, then the blocking Allreduce), best of 5 rounds each, for 24 B,
256 KB and 2 MB buffers. Prints a table; nothing is asserted.
"""
import argparse
import hashlib
import os
import sys
import tempfile
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def best_of(fn, rounds=5):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def files():
    import airi
    from airi.layers import Linear
    model = airi.Sequential([Linear(5000, 5000, dtype=np.float32)])   # 100 MB
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "big.pkl")
        save = best_of(lambda: airi.save(model, path), 3)
        load = best_of(lambda: airi.load(path), 3)
        with open(path, "rb") as f:
            data = f.read()
    print(f"model file: {len(data) / 1e6:.0f} MB")
    for name, fn in [("crc32 (zlib)", lambda: zlib.crc32(data)),
                     ("sha256", lambda: hashlib.sha256(data).digest()),
                     ("blake2b", lambda: hashlib.blake2b(data).digest())]:
        print(f"  {name:14s} {best_of(fn) * 1e3:8.1f} ms")
    print(f"  airi.save      {save * 1e3:8.1f} ms (includes fsync)")
    print(f"  airi.load      {load * 1e3:8.1f} ms (includes the CRC-32 check)")


def collectives():
    from airi import distributed
    from airi.distributed.collectives import allreduce_inplace, wait
    rank, _ = distributed.init()
    comm, MPI = distributed.world(), distributed._world.MPI

    def blocking(buf):
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def nonblocking(buf):
        wait(comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM), "bench")

    def airi_bounded(buf):
        allreduce_inplace(buf, MPI.SUM, "bench")

    for nbytes in (24, 256 << 10, 2 << 20):
        buf = np.ones(nbytes // 8)
        n = 500 if nbytes < 1000 else 40
        best = {}
        for _ in range(5):
            for fn in (blocking, nonblocking, airi_bounded):
                comm.Barrier()
                start = time.perf_counter()
                for _ in range(n):
                    fn(buf)
                seconds = (time.perf_counter() - start) / n
                best[fn.__name__] = min(best.get(fn.__name__, 1e9), seconds)
        if rank == 0:
            print(f"{nbytes:>8d} B  " + "  ".join(f"{k} {v * 1e6:7.1f} us"
                                                for k, v in best.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mpi", action="store_true", help="time the collectives")
    if parser.parse_args().mpi:
        collectives()
    else:
        files()
