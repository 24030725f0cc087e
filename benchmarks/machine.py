"""The machine a benchmark ran on: CPU model, cores and vector instruction set.

Every benchmark prints :func:`describe` first (and stores :func:`info` in its JSON):
figures from an AVX2 and an AVX-512 machine differ, and so do the planner's rules.
"""
import os
import platform


def _cpuinfo():
    """(model name, set of flags) from /proc/cpuinfo (Linux), else (platform's, set())."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def instruction_set(flags):
    """The widest vector instruction set airi's kernels can use here."""
    if {"avx512f", "fma"} <= flags:
        return "AVX-512"
    if {"avx2", "fma"} <= flags:
        return "AVX2+FMA"
    return "SSE2/baseline" if flags else "unknown"


def info():
    """A dict: cpu model, cores usable by this process, instruction set, the direct
    convolution's compiled level, numpy's BLAS."""
    model, flags = _cpuinfo()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    level = None
    try:
        from airi import _backend
        if "cython" in _backend.available_backends():
            level = _backend._impls["cython"].direct_conv_level()
    except Exception:
        pass
    blas = None
    try:
        from threadpoolctl import threadpool_info
        blas = ", ".join(f"{i.get('internal_api')} {i.get('version')}"
                         for i in threadpool_info() if i.get("user_api") == "blas")
    except Exception:
        pass
    return dict(cpu=model, cores=cores, isa=instruction_set(flags),
                direct_conv_level=level, blas=blas, machine=platform.machine(),
                python=platform.python_version())


def describe():
    """One line for the top of a benchmark's output."""
    i = info()
    level = {2: "AVX-512", 1: "AVX2", 0: "baseline", -1: "not compiled"}.get(
        i["direct_conv_level"], "no compiled kernels")
    return (f"machine: {i['cpu']}, {i['cores']} cores, {i['isa']} "
            f"(airi direct convolution: {level}; BLAS: {i['blas'] or '?'})")
