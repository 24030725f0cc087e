"""setup.py's build_ext (AiriBuildExt), checked on a one-line C extension instead of
airi's kernels so that no test waits for a real build:

* a failed compile removes the extension's binaries, including those of an earlier
  build, so a wheel can never ship stale kernels (issue 17);
* it records the outcome (and the compiler's first error line) in
  airi/_ext/_build_info.py, which airi reads at import (tests/test_backend.py checks
  the message);
* an unchanged extension is not compiled again (a later `pip install ".[test]"`), a
  changed source is.
"""
import importlib.util
import os
import runpy
import shutil
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP_PY = os.path.join(ROOT, "setup.py")

pytestmark = pytest.mark.skipif(not os.path.exists(SETUP_PY),
                                reason="setup.py is not beside the tests")

TINY_C = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef tiny = {PyModuleDef_HEAD_INIT, "tiny", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_tiny(void) { return PyModule_Create(&tiny); }
"""


def load_setup():
    pytest.importorskip("setuptools")
    spec = importlib.util.spec_from_file_location("airi_setup_under_test", SETUP_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # setup() itself only runs as __main__
    return module


def make_command(module, project):
    """An AiriBuildExt for ``project`` holding pkg/tiny.c, built into project/build."""
    from setuptools import Distribution, Extension
    os.chdir(project)
    dist = Distribution({"name": "pkg", "packages": ["pkg"],
                         "ext_modules": [Extension("pkg.tiny", ["pkg/tiny.c"])]})
    command = module.AiriBuildExt(dist)
    command.build_lib = os.path.join("build", "lib")
    command.build_temp = os.path.join("build", "temp")
    command.ensure_finalized()
    return command


def read_record(project):
    return runpy.run_path(os.path.join(project, "build", "lib", "airi", "_ext",
                                       "_build_info.py"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRI_REQUIRE_COMPILED", raising=False)
    monkeypatch.chdir(tmp_path)   # make_command changes directory; this restores it
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "tiny.c").write_text(TINY_C)
    return str(tmp_path)


@pytest.fixture
def failing_compiler(tmp_path, monkeypatch):
    if os.name != "posix":
        pytest.skip("the fake compiler is a shell script")
    script = tmp_path / "fakecc"
    script.write_text("#!/bin/sh\necho 'In file included from tiny.c:1:' >&2\n"
                      "echo 'tiny.c:2:10: fatal error: no such compiler here' >&2\n"
                      "exit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    monkeypatch.setenv("LDSHARED", f"{script} -shared")
    return str(script)


def test_a_failed_compile_removes_the_binaries_of_an_earlier_build(project,
                                                                   failing_compiler):
    setup_module = load_setup()
    command = make_command(setup_module, project)
    stale = command.get_ext_fullpath("pkg.tiny")
    os.makedirs(os.path.dirname(stale), exist_ok=True)
    with open(stale, "wb") as f:
        f.write(b"an old build's binary")
    command.run()                          # fails, warns, does not raise
    assert not os.path.exists(stale)
    record = read_record(project)
    assert record["COMPILED"] is False
    assert record["ERROR"] == "tiny.c:2:10: fatal error: no such compiler here"


def test_a_failed_compile_is_fatal_when_compiled_kernels_are_required(
        project, failing_compiler, monkeypatch):
    setup_module = load_setup()
    command = make_command(setup_module, project)
    monkeypatch.setenv("AIRI_REQUIRE_COMPILED", "1")
    with pytest.raises(RuntimeError, match="AIRI_REQUIRE_COMPILED=1: tiny.c:2:10: fatal"):
        command.run()
    assert read_record(project)["COMPILED"] is False


def test_a_missing_compiler_is_recorded(project, monkeypatch):
    setup_module = load_setup()
    monkeypatch.setenv("CC", os.path.join(project, "no-such-cc"))
    monkeypatch.setenv("LDSHARED", os.path.join(project, "no-such-cc") + " -shared")
    command = make_command(setup_module, project)
    command.run()
    error = read_record(project)["ERROR"]
    assert "no-such-cc" in error and "could not run" in error


def test_first_error_line_prefers_the_error_over_notes():
    first_error_line = load_setup().first_error_line
    output = ("In file included from x.c:1:\n"
              "x.c:3:5: warning: unused variable 'a'\n"
              "x.c:9:1: error: expected ';' before '}' token\n"
              "x.c:12:1: error: something later\n")
    assert first_error_line(output) == "x.c:9:1: error: expected ';' before '}' token"
    assert first_error_line("ld: cannot find -lgomp\n") == "ld: cannot find -lgomp"
    assert first_error_line("") is None


def have_compiler():
    cc = (sysconfig.get_config_var("CC") or "").split()
    return os.name == "posix" and bool(cc) and shutil.which(cc[0]) is not None \
        and os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))


@pytest.mark.skipif(not have_compiler(), reason="needs a C compiler and Python.h")
def test_an_unchanged_extension_is_not_compiled_again(project, monkeypatch):
    """One real compile of a one-line module (well under a second), then a rebuild
    that reuses it, then a changed source that is compiled again."""
    setup_module = load_setup()
    command = make_command(setup_module, project)
    command.run()
    binary = command.get_ext_fullpath("pkg.tiny")
    assert read_record(project)["COMPILED"] is True and os.path.exists(binary)
    built = os.stat(binary).st_mtime_ns

    make_command(setup_module, project).run()
    assert os.stat(binary).st_mtime_ns == built          # reused

    with open(os.path.join(project, "pkg", "tiny.c"), "a") as f:
        f.write("/* changed */\n")
    make_command(setup_module, project).run()
    assert os.stat(binary).st_mtime_ns != built          # compiled again
    assert read_record(project)["COMPILED"] is True
