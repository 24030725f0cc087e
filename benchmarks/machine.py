"""What machine a benchmark ran on: CPU model, instruction set, cores, versions.

Shared by the benchmark scripts (``from machine import machine_info, describe``; the
scripts' folder is on ``sys.path`` when they run). Figures without the CPU and its
vector instruction set cannot be compared, so every result JSON carries this.
"""
import os
import platform


def _cpuinfo():
    """``model name`` and ``flags`` of the first processor in /proc/cpuinfo (Linux)."""
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
                if model is not None and flags:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def instruction_set(flags):
    """The widest x86 vector extension the CPU reports: ``AVX-512``, ``AVX2``, ..."""
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
                       ("sse4_2", "SSE4.2")):
        if flag in flags:
            return name + (" + FMA" if "fma" in flags and name != "AVX-512" else "")
    return "unknown" if not flags else "baseline"


def _airi_kernel_level():
    """Which version of airi's direct-convolution kernels runs (chosen at run time)."""
    try:
        from airi import _backend
        level = _backend._direct_level()
    except Exception:            # an older airi, or no compiled kernels
        return None
    return {2: "AVX-512", 1: "AVX2", 0: "baseline"}.get(level, "not built")


def machine_info():
    """A dict for result JSON: cpu, instruction_set, airi_kernels, cpus, python, numpy."""
    import numpy as np
    cpu, flags = _cpuinfo()
    return dict(cpu=cpu, instruction_set=instruction_set(flags),
                airi_kernels=_airi_kernel_level(), cpus=os.cpu_count(),
                machine=platform.machine(), python=platform.python_version(),
                numpy=np.__version__)


def describe(info=None):
    """One line for the top of a benchmark's output."""
    info = info or machine_info()
    kernels = f", airi kernels {info['airi_kernels']}" if info.get("airi_kernels") else ""
    return (f"{info['cpu']} ({info['instruction_set']}{kernels}), {info['cpus']} CPUs, "
            f"Python {info['python']}, NumPy {info['numpy']}")
