"""The one backend switch: airi.backend(), set_backend, AIRI_BACKEND,
AIRI_REQUIRE_COMPILED, the warning when the extension is missing, the kernel API
version check, and the thread-count settings."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import airi
import airi.functional
from airi import _backend, _config
from conftest import REQUIRE_COMPILED

# The folder holding the airi package these tests import (source tree or install),
# so subprocesses import the very same airi.
AIRI_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(airi.__file__)))


# Imported before airi, this makes `from ._ext import _conv, _pool` fail as it does
# when the extension was never built.
HIDE_EXTENSION = """
import sys
sys.modules["airi._ext._conv"] = None
sys.modules["airi._ext._pool"] = None
"""


def run_python(code, hide_extension=False, **env_vars):
    """Run ``code`` in a fresh interpreter with a clean AIRI_* environment; with
    ``hide_extension`` the compiled kernels cannot be imported there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRI_")}
    env.update(env_vars)
    env["PYTHONPATH"] = AIRI_PARENT + os.pathsep + env.get("PYTHONPATH", "")
    code = (HIDE_EXTENSION if hide_extension else "") + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", code], env=env,
                          cwd=AIRI_PARENT, capture_output=True, text=True, timeout=120)




def test_compiled_kernels_run_when_required():
    """Fails when AIRI_REQUIRE_COMPILED=1 is set and the compiled kernels are not the
    ones running (CI sets it, so a silent fallback to NumPy cannot pass CI)."""
    if REQUIRE_COMPILED:
        assert airi.backend() == "cython", (
            f"AIRI_REQUIRE_COMPILED=1 but airi.backend() is {airi.backend()!r}: "
            f"{_backend.compiled_error()}")
    else:
        assert airi.backend() in ("cython", "numpy")


def test_backend_reports_the_kernels_in_use():
    assert airi.backend() in ("cython", "numpy")
    assert airi.backend() == _backend.backend()
    assert "numpy" in airi.available_backends()
    built = _backend.compiled_error() is None
    assert ("cython" in airi.available_backends()) == built
    if built and os.environ.get("AIRI_BACKEND", "").lower() != "numpy":
        assert airi.backend() == "cython"  # compiled kernels are the default


def test_set_backend_switches_the_kernels():
    airi.set_backend("numpy")
    assert airi.backend() == "numpy"
    assert _backend._impl is _backend._impls["numpy"]
    if "cython" in airi.available_backends():
        airi.set_backend("CYTHON")  # case does not matter
        assert airi.backend() == "cython"


def test_set_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="'cython' or 'numpy'"):
        airi.set_backend("torch")


def test_set_backend_cython_without_the_extension_is_an_error(monkeypatch):
    monkeypatch.setattr(_backend, "_impls", {"numpy": _backend._impls["numpy"]})
    monkeypatch.setattr(_backend, "_compiled_error", "ImportError: simulated")
    with pytest.raises(RuntimeError, match="not available.*simulated"):
        airi.set_backend("cython")


def test_use_backend_restores_the_previous_backend():
    airi.set_backend("numpy")
    target = "cython" if "cython" in airi.available_backends() else "numpy"
    with _backend.use_backend(target):
        assert airi.backend() == target
    assert airi.backend() == "numpy"


def test_environment_variable_forces_numpy():
    result = run_python("import airi; print(airi.backend())", AIRI_BACKEND="numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"
    assert "RuntimeWarning" not in result.stderr  # forcing NumPy is not a warning


def test_environment_variable_rejects_unknown_backend():
    result = run_python("import airi", AIRI_BACKEND="fortran")
    assert result.returncode != 0
    assert "AIRI_BACKEND must be 'cython' or 'numpy'" in result.stderr


def test_missing_extension_warns_once_and_falls_back_to_numpy():
    result = run_python(hide_extension=True, code="""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import airi
            import numpy as np
            import airi.functional as F
            F.max_pool2d_forward(np.zeros((1, 1, 4, 4)), 2)
            F.im2col(np.zeros((1, 1, 4, 4)), 3, 1, 1)
        messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
        print(airi.backend())
        print(len(messages))
        print(messages[0] if messages else "")
    """)
    assert result.returncode == 0, result.stderr
    backend, count, message = result.stdout.strip().splitlines()
    assert backend == "numpy"
    assert count == "1"  # once, not per call
    assert "compiled kernels could not be imported" in message
    assert "airi._ext._conv" in message  # says why


def test_missing_extension_is_an_error_when_compiled_kernels_are_required():
    result = run_python("import airi", hide_extension=True, AIRI_REQUIRE_COMPILED="1")
    assert result.returncode != 0
    assert "AIRI_REQUIRE_COMPILED=1" in result.stderr
    assert "cannot be imported" in result.stderr


def test_missing_extension_with_backend_numpy_needs_no_extension():
    result = run_python("import airi; print(airi.backend())", hide_extension=True,
                        AIRI_BACKEND="numpy")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "numpy"


def test_stale_extension_with_another_api_version_is_refused(monkeypatch):
    """airi/_ext may pick up the .so of another (older) install: its API_VERSION must
    match, or the compiled kernels are not used and the reason says so."""
    if "cython" not in _backend.available_backends():
        pytest.skip("compiled kernels not built")
    from airi._ext import _conv, _pool
    assert _conv.API_VERSION == _pool.API_VERSION == _backend._KERNEL_API_VERSION
    monkeypatch.setattr(_pool, "API_VERSION", 0)
    kernels, why = _backend._load_compiled()
    assert kernels is None
    assert "API_VERSION" in why and "_pool" in why
    monkeypatch.delattr(_conv, "API_VERSION")
    kernels, why = _backend._load_compiled()
    assert kernels is None and "API_VERSION None" in why


def test_stale_extension_falls_back_with_a_warning_in_a_fresh_process():
    # a stand-in for an old build's module, found before airi is imported
    result = run_python("""
        import sys, types, warnings
        stale = types.ModuleType("airi._ext._conv")
        stale.__file__ = "/old/site-packages/airi/_ext/_conv.so"
        stale.API_VERSION = 999
        sys.modules["airi._ext._conv"] = stale
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import airi
        print(airi.backend())
        print([str(w.message) for w in caught if w.category is RuntimeWarning][0])
    """)
    assert result.returncode == 0, result.stderr
    backend, message = result.stdout.strip().splitlines()
    assert backend == "numpy"
    assert "API_VERSION 999" in message and "/old/site-packages" in message


# ----------------------------------------------------------------------- seed
@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None, [1, 2]])
def test_seed_rejects_anything_but_a_non_negative_int(bad):
    state = _config.get_rng_state()
    with pytest.raises(ValueError, match=r"airi\.seed: n must be a non-negative int, got "):
        airi.seed(bad)
    assert _config.get_rng_state() == state          # the generator is left alone


def test_seed_accepts_python_and_numpy_ints():
    airi.seed(np.int64(7))
    a = _config.get_rng().random()
    airi.seed(7)
    assert _config.get_rng().random() == a


# -------------------------------------------------------------------- threads
def test_set_num_threads():
    airi.set_num_threads(3)
    assert airi.get_num_threads() == 3
    airi.set_num_threads(1)
    assert airi.get_num_threads() == 1


@pytest.mark.parametrize("bad", [0, -2])
def test_set_num_threads_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="threads must be >= 1"):
        airi.set_num_threads(bad)


def test_num_threads_defaults_to_the_cores_available(monkeypatch):
    monkeypatch.delenv("AIRI_NUM_THREADS", raising=False)
    monkeypatch.setattr(_config, "_num_threads", None)
    assert airi.get_num_threads() == _config._cores_available() >= 1


def test_num_threads_from_environment(monkeypatch):
    monkeypatch.setenv("AIRI_NUM_THREADS", "2")
    monkeypatch.setattr(_config, "_num_threads", None)
    assert airi.get_num_threads() == 2


@pytest.mark.parametrize("bad", ["zero", "0", "-1", "1.5"])
def test_num_threads_environment_is_validated(monkeypatch, bad):
    monkeypatch.setenv("AIRI_NUM_THREADS", bad)
    monkeypatch.setattr(_config, "_num_threads", None)
    with pytest.raises(ValueError, match="AIRI_NUM_THREADS must be a positive integer"):
        airi.get_num_threads()


def test_kernels_run_with_any_thread_count(each_backend):
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    expected = None
    for threads in (1, 4):
        airi.set_num_threads(threads)
        out = airi.functional.max_pool2d_forward(x, 2)[0]
        expected = out if expected is None else expected
        np.testing.assert_array_equal(out, expected)


# ------------------------------------------------------------- kernel namespaces
def test_kernel_namespaces_have_identical_signatures():
    """The compiled kernels and their NumPy twins are two namespaces of the same
    methods with the same signatures: the backend only chooses between them."""
    import inspect

    def methods(cls):
        return {name: inspect.signature(fn) for name, fn in vars(cls).items()
                if callable(fn) and not name.startswith("_")}

    compiled, twins = methods(_backend.CompiledKernels), methods(_backend.NumpyKernels)
    assert compiled == twins
    assert {"im2col_into", "col2im_into", "maxpool_forward_into", "direct_conv_into",
            "winograd_input_into", "batchnorm_normalize_into"} <= set(compiled)
    assert _backend.kernels() is _backend._impls[_backend.backend()]


def test_layers_never_import_the_thread_pool_or_the_backend():
    """airi/layers/ holds parameters, mode, cache and shape checks; the maths is in
    airi.functional, which reaches the planner, the threads and the backend."""
    import glob
    import re
    layers = os.path.join(os.path.dirname(airi.__file__), "layers")
    pattern = re.compile(r"^\s*(from|import) .*(_parallel|_backend|_planner)", re.M)
    offenders = [path for path in glob.glob(os.path.join(layers, "*.py"))
                 if pattern.search(open(path).read())]
    assert offenders == []


# ------------------------------------------------------- the thread owner
def test_parallel_run_covers_every_chunk_once_and_reraises(monkeypatch):
    """airi._parallel.run: every chunk runs exactly once, on workers 0..n-1; an error
    in any worker reaches the caller; a nested region runs on its caller's thread."""
    from airi import _parallel
    airi.set_num_threads(2)
    monkeypatch.setattr(_parallel, "workers_available", lambda: 2)
    seen, workers = [], set()

    def record(worker, start, stop):
        seen.extend(range(start, stop))
        workers.add(worker)
        nested = []
        _parallel.run(lambda w, a, b: nested.append((w, a, b)), 4, 1)
        assert [n[0] for n in nested] == [0] * 4       # stayed on this thread
    assert _parallel.run(record, 23, 2) == 2
    assert sorted(seen) == list(range(23)) and workers <= {0, 1}

    def fail(worker, start, stop):
        if start == 10:
            raise KeyError("chunk 10")
    with pytest.raises(KeyError, match="chunk 10"):
        _parallel.run(fail, 20, 1)
    assert _parallel.run(lambda w, a, b: None, 20, 1) == 2  # the team still works
