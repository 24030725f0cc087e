"""Data-parallel throughput: 1 process x 2 threads against 2 processes x 1 thread.

Measures, for the seed's CIFAR model (``airi.models.airi_cifar``) and LeNet
(``airi.models.lenet``), training images per second with the same global batch:

* ``airi 1x2``          one process, 2 kernel/BLAS threads (no MPI);
* ``airi 2x1``          ``mpiexec -n 2``, 1 thread each, blocking bucketed allreduce
                        (what ``python -m airi.train`` does);
* ``airi 2x1 overlap``  the same with non-blocking allreduce started per bucket during
                        back-propagation (``GradientReducer.backward``);
* ``torch 1x2`` and ``torch 2x1 DDP``  PyTorch on the same models and the same two
  processes (DistributedDataParallel, gloo), when torch is installed.

and, for the 2x1 runs, the time per step spent in the gradient allreduce (including
waiting for the slower rank) and the cost of the allreduce alone (measured after a
barrier, so without waiting).

Usage::

    python benchmarks/bench_distributed.py                   # both models, 3 rounds
    python benchmarks/bench_distributed.py --models lenet --rounds 1 --json out.json

Runs are interleaved round by round (1x2, 2x1, ... then again) and the best of the
rounds is reported, because the machine may be shared. Needs ``pip install "airi[mpi]"``
(mpi4py and mpiexec); as root it sets the variables Open MPI asks for.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
INPUT_SHAPES = {"lenet": (1, 28, 28), "airi_cifar": (3, 32, 32)}
NUM_CLASSES = 10


# ============================================================================ workers
def _shard(batch, rank, world):
    base, extra = divmod(batch, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _synthetic_batch(model, batch):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch,) + INPUT_SHAPES[model]).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, size=batch)
    return X, y


def airi_worker(args):
    """One airi process of a run; rank 0 prints one JSON line."""
    sys.path.insert(0, str(ROOT))
    import airi
    from airi import distributed

    rank, world = distributed.init(threads=args.threads)
    airi.set_num_threads(args.threads)
    airi.seed(0)
    model = airi.models.get_model(args.model)
    params = model.parameters()
    distributed.broadcast_parameters(model)
    optimizer = airi.optim.SGD(params, lr=0.01, momentum=0.9)
    loss_fn = airi.CrossEntropyLoss()
    X, y = _synthetic_batch(args.model, args.batch)
    lo, hi = _shard(args.batch, rank, world)
    xb, yb = X[lo:hi], y[lo:hi]
    parallel = distributed.context()
    trainer = airi.Trainer(model, loss_fn, optimizer, parallel=parallel, verbose=False)
    reducer = distributed.GradientReducer(params) if world > 1 else None

    def step():
        if not args.overlap or reducer is None:
            trainer.train_step(xb, yb)
            return parallel.reduce_seconds if world > 1 else 0.0
        optimizer.zero_grad()
        out = model.forward(xb, training=True)
        loss_fn(out, yb)
        reducer.backward(model, loss_fn.backward(), weight=len(xb))
        optimizer.step()
        return reducer.reduce_seconds

    for _ in range(args.warmup):
        step()
    distributed.barrier()
    reduce_total = 0.0
    before = parallel.reduce_seconds if world > 1 else 0.0
    start = time.perf_counter()
    for _ in range(args.steps):
        spent = step()
        if args.overlap and reducer is not None:
            reduce_total += spent
    distributed.barrier()
    elapsed = time.perf_counter() - start
    if world > 1 and not args.overlap:
        reduce_total = parallel.reduce_seconds - before
    # The allreduce alone: all ranks arrive together (barrier), nothing else runs.
    pure = None
    if world > 1:
        probe = reducer if reducer is not None else distributed.GradientReducer(params)
        times = []
        for _ in range(20):
            distributed.barrier()
            t = time.perf_counter()
            probe.reduce(weight=len(xb))
            times.append(time.perf_counter() - t)
        pure = float(np.median(times))
    reduce_per_step = distributed.allreduce_sum([reduce_total / args.steps])[0] / world
    if rank == 0:
        n_params = sum(p.size for p in params)
        print(json.dumps({
            "images_per_second": args.batch * args.steps / elapsed,
            "seconds_per_step": elapsed / args.steps,
            "allreduce_seconds_per_step": reduce_per_step if world > 1 else 0.0,
            "allreduce_alone_seconds": pure,
            "buckets": len(probe.buckets) if world > 1 else 0,
            "parameters": n_params,
            "bytes_reduced": 4 * n_params,
            "threads": airi.get_num_threads(),
            "world_size": world,
            "backend": airi.backend(),
        }), flush=True)


def _torch_model(name):
    import torch.nn as nn
    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(800, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES))
    return nn.Sequential(nn.Conv2d(3, 16, 5), nn.ReLU(), nn.Conv2d(16, 16, 5), nn.ReLU(),
                         nn.Flatten(), nn.Linear(9216, 120), nn.ReLU(), nn.Linear(120, 84),
                         nn.ReLU(), nn.Linear(84, NUM_CLASSES))


def torch_worker(args):
    """One PyTorch process; under mpiexec (world > 1) wrapped in DDP with gloo."""
    import torch
    import torch.distributed as dist
    torch.set_num_threads(args.threads)
    world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    torch.manual_seed(0)
    model = _torch_model(args.model)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}",
                                rank=rank, world_size=world)
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    X, y = _synthetic_batch(args.model, args.batch)
    lo, hi = _shard(args.batch, rank, world)
    xb, yb = torch.from_numpy(X[lo:hi]), torch.from_numpy(y[lo:hi])

    def step():
        optimizer.zero_grad()
        loss_fn(model(xb), yb).backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if world > 1:
        dist.barrier()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if world > 1:
        dist.barrier()
    elapsed = time.perf_counter() - start
    if rank == 0:
        print(json.dumps({"images_per_second": args.batch * args.steps / elapsed,
                          "seconds_per_step": elapsed / args.steps,
                          "threads": torch.get_num_threads(), "world_size": world}),
              flush=True)
    if world > 1:
        dist.destroy_process_group()


# ============================================================================ driver
def _mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    env.pop("AIRI_NUM_THREADS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH")] if p)
    return env


def _run(kind, model, processes, threads, opts, overlap=False, env=None):
    """Launch one measurement and return its JSON result (or an error dict)."""
    worker = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
              "--model", model, "--threads", str(threads), "--batch", str(opts.batch_size),
              "--steps", str(opts.steps[model]), "--warmup", "2",
              "--port", str(_free_port())]
    if overlap:
        worker.append("--overlap")
    command = ([_mpiexec(), "-n", str(processes)] + worker) if processes > 1 else worker
    done = subprocess.run(command, capture_output=True, text=True,
                          env=dict(_env(), **(env or {})), timeout=opts.timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


#: OpenMP threads that busy-wait between parallel regions steal the cores from BLAS
#: and NumPy work on a small machine; "passive" makes them sleep.
PASSIVE = {"OMP_WAIT_POLICY": "PASSIVE"}


def _configurations(has_torch):
    """(name, kind, processes, threads, overlap, extra environment)"""
    configs = [("airi 1x2", "airi", 1, 2, False, None),
               ("airi 1x2 passive", "airi", 1, 2, False, PASSIVE),
               ("airi 1x1", "airi", 1, 1, False, None),
               ("airi 2x1", "airi", 2, 1, False, None),
               ("airi 2x1 overlap", "airi", 2, 1, True, None)]
    if has_torch:
        configs += [("torch 1x2", "torch", 1, 2, False, None),
                    ("torch 2x1 DDP", "torch", 2, 1, False, None)]
    return configs


def _best(results):
    ok = [r for r in results if "error" not in r]
    return max(ok, key=lambda r: r["images_per_second"]) if ok else results[-1]


def _report(table):
    print()
    print("vs 1x2: images/s over the same library's 1x2; vs best 1: over its best "
          "single process (1x2, 1x2 passive, 1x1)")
    print(f"{'model':<11} {'run':<17} {'img/s':>8} {'ms/step':>8} {'allreduce ms/step':>18} "
          f"{'alone ms':>9} {'vs 1x2':>7} {'vs best 1':>9}")
    for model, rows in table.items():
        for name, r in rows.items():
            if "error" in r:
                print(f"{model:<11} {name:<17} error: {r['error']}")
                continue
            lib = name.split()[0]
            base = rows.get(f"{lib} 1x2", {}).get("images_per_second")
            singles = [v.get("images_per_second") or 0 for k, v in rows.items()
                       if k.startswith(f"{lib} 1x")]
            best = max(singles) if singles else None
            ratio = f"{r['images_per_second'] / base:.2f}x" if base else ""
            ratio_best = f"{r['images_per_second'] / best:.2f}x" if best else ""
            ar = r.get("allreduce_seconds_per_step")
            alone = r.get("allreduce_alone_seconds")
            print(f"{model:<11} {name:<17} {r['images_per_second']:>8.0f} "
                  f"{1000 * r['seconds_per_step']:>8.1f} "
                  f"{'' if not ar else f'{1000 * ar:.2f}':>18} "
                  f"{'' if alone is None else f'{1000 * alone:.2f}':>9} {ratio:>7} "
                  f"{ratio_best:>9}")


# ============================================================================ projection
LINKS_GBIT = (10, 25, 100)
MACHINES = (2, 4, 8, 16, 32, 64)
#: Per-message latency of MPI over TCP/Ethernet between machines (an assumption).
LATENCY_SECONDS = 20e-6


def ring_allreduce_seconds(nbytes, machines, gbit, buckets=1, latency=LATENCY_SECONDS):
    """Time of a ring allreduce of ``nbytes`` over ``machines`` on links of ``gbit``
    Gbit/s: each of the ``buckets`` rings takes 2(K-1) latency-bound steps, and every
    machine sends (and receives) 2(K-1)/K of the data."""
    if machines < 2:
        return 0.0
    bandwidth = gbit * 1e9 / 8
    return (2 * (machines - 1) * latency * buckets
            + 2 * (machines - 1) / machines * nbytes / bandwidth)


def projection(nbytes, buckets, step_seconds):
    """{machines: {gbit: (allreduce seconds, efficiency)}} for weak scaling: every
    machine keeps the measured per-step compute (its own batch), and the allreduce is
    not overlapped with it (efficiency = compute / (compute + allreduce))."""
    table = {}
    for k in MACHINES:
        table[k] = {}
        for gbit in LINKS_GBIT:
            t = ring_allreduce_seconds(nbytes, k, gbit, buckets)
            table[k][gbit] = (t, step_seconds / (step_seconds + t))
    return table


def _print_projection(model, r, batch):
    nbytes, buckets, step = r["bytes_reduced"], r.get("buckets") or 1, r["seconds_per_step"]
    print(f"\n{model}: {nbytes / 1e6:.2f} MB of float32 gradients per step in {buckets} "
          f"bucket(s); compute {1000 * step:.0f} ms per step of {batch} images per machine "
          "(best single process measured). Ring allreduce (latency "
          f"{LATENCY_SECONDS * 1e6:.0f} us) and weak-scaling efficiency:")
    print(f"{'machines':>8} " + " ".join(f"{f'{g} Gbit/s':>18}" for g in LINKS_GBIT))
    for k, row in projection(nbytes, buckets, step).items():
        cells = [f"{1000 * t:6.2f} ms {100 * e:5.1f}%" for t, e in row.values()]
        print(f"{k:>8} " + " ".join(f"{c:>18}" for c in cells))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["lenet", "airi_cifar"],
                   choices=sorted(INPUT_SHAPES))
    p.add_argument("--batch-size", type=int, default=64, help="global batch (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    p.add_argument("--seconds", type=float, default=6.0,
                   help="target length of a timed 1x1 run (steps are set from a probe)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", help="also write the results to this file")
    # worker mode (internal)
    p.add_argument("--worker", choices=("airi", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=29500, help=argparse.SUPPRESS)
    p.add_argument("--overlap", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "airi":
        return airi_worker(args)
    if args.worker == "torch":
        return torch_worker(args)

    if _mpiexec() is None:
        sys.exit("bench_distributed: no mpiexec found: pip install 'airi[mpi]'")
    sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
    import machine
    print(machine.describe(), flush=True)
    try:
        import torch  # noqa: F401
        has_torch = not args.no_torch
    except ImportError:
        has_torch = False
    # Probe each model's speed once (1x1, few steps) to pick the number of steps.
    args.steps = {}
    for model in args.models:
        args.steps[model] = 3
        probe = _run("airi", model, 1, 1, args)
        step_s = probe.get("seconds_per_step", 1.0)
        args.steps[model] = max(5, int(args.seconds / step_s))
        print(f"{model}: {args.steps[model]} timed steps of global batch {args.batch_size}",
              flush=True)
    results = {m: {c[0]: [] for c in _configurations(has_torch)} for m in args.models}
    for round_ in range(args.rounds):
        for model in args.models:
            for name, kind, procs, threads, overlap, env in _configurations(has_torch):
                r = _run(kind, model, procs, threads, args, overlap, env)
                results[model][name].append(r)
                shown = r.get("images_per_second")
                print(f"round {round_ + 1} {model:<10} {name:<17} "
                      f"{'error: ' + r['error'] if shown is None else f'{shown:.0f} img/s'}",
                      flush=True)
    table = {m: {name: _best(runs) for name, runs in rows.items()}
             for m, rows in results.items()}
    _report(table)
    for model, rows in table.items():
        # Compute per machine: the fastest single process of airi (batch of 64).
        singles = [r for name, r in rows.items()
                   if name.startswith("airi 1x") and "seconds_per_step" in r]
        pair = rows.get("airi 2x1", {})
        if singles and "bytes_reduced" in pair:
            step = min(r["seconds_per_step"] for r in singles)
            _print_projection(model, dict(pair, seconds_per_step=step), args.batch_size)
    if args.json:
        Path(args.json).write_text(json.dumps({"best": table, "all": results,
                                               "batch_size": args.batch_size,
                                               "machine": machine.info()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
