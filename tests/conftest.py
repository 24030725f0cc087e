"""Shared fixtures: every test starts from airi's defaults and leaves them as found."""
import os

import numpy as np
import pytest

import airi
from airi import _backend, _config

REQUIRE_COMPILED = os.environ.get("AIRI_REQUIRE_COMPILED", "0") == "1"
BACKENDS = ["cython", "numpy"]


@pytest.fixture(autouse=True)
def _restore_airi_state():
    backend = _backend.backend()
    dtype = _config.get_default_dtype()
    rng_state = _config.get_rng_state()
    threads = _config._num_threads
    yield
    _backend.set_backend(backend)
    _config.set_default_dtype(dtype)
    _config.set_rng_state(rng_state)
    _config._num_threads = threads


@pytest.fixture(params=BACKENDS)
def each_backend(request):
    """Run the test once per backend (the compiled one is skipped only when it was not
    built and AIRI_REQUIRE_COMPILED is not set)."""
    name = request.param
    if name not in _backend.available_backends():
        if REQUIRE_COMPILED:
            pytest.fail(f"compiled kernels required but missing: {_backend.compiled_error()}")
        pytest.skip(f"compiled kernels not built: {_backend.compiled_error()}")
    _backend.set_backend(name)
    return name


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
