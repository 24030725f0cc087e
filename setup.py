"""Build script for airi's compiled kernels.

``pip install .`` compiles every ``airi/_ext/*.pyx`` (and the C sources of
``airi/_ext/src``) with optimisation. The kernels are single-threaded: airi's own
threads (airi/_parallel.py) run them on slices of the batch, so no OpenMP is needed. A
failed compilation of the extensions is fatal only when ``AIRI_REQUIRE_COMPILED=1``:
otherwise airi installs and runs on its NumPy kernels.

What the build does, and why (figures in benchmarks/README.md, "Install time"):

* Cython runs on all .pyx files at once, in parallel, and the memoryview support code
  Cython would paste into every module goes into one shared module
  (``airi._ext._cyutility``), compiled once instead of four times.
* Every C source of every extension (the direct convolution's instruction-set versions
  are separate files of src/) is compiled in parallel, one job per core, the biggest
  first; then each extension is linked.
* Kernels get ``-O3 -g0 -fno-wrapv``: no debug info, and signed overflow stays
  undefined (Python's own ``-fwrapv`` made the direct convolution compile 4x slower).
  The shared Cython support module gets ``-O2``: it holds no hot loops.
* An extension whose sources, compiler and flags are those of the copy in ``build/`` is
  not compiled again (a later ``pip install ".[test]"`` in the same clone reuses it);
  the key is a hash of the sources' contents, never their timestamps.
* A failed build removes the extensions' outputs (so a wheel never ships the binaries of
  an earlier build) and records the outcome in ``airi/_ext/_build_info.py``, which
  airi reads at import to say why the kernels are missing and how to fix it.
"""
import concurrent.futures
import glob
import hashlib
import os
import platform
import subprocess
import sys
import sysconfig
import threading
import time

from setuptools import setup, Extension
from setuptools.command.build_ext import build_ext
from setuptools.errors import ExecError

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "initializedcheck": False,
    "cdivision": True,
    "nonecheck": False,
}
# Cython's memoryview support code, shared by the kernel modules (Cython >= 3.1)
SHARED_UTILITY = "airi._ext._cyutility"
BUILD_INFO = "_build_info.py"  # in airi/_ext: the outcome of the last build
_print_lock = threading.Lock()


def first_error_line(output):
    """The line of a compiler's output that says what went wrong: the first line
    naming an error, else the first non-empty line (None for empty output)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("error:", "error"):
        for line in lines:
            if marker in line.lower():
                return line
    return lines[0] if lines else None


def write_build_info(folder, compiled, error=None):
    """Write ``folder/_build_info.py``: whether the kernels compiled, and if not, the
    first line of the error (read by airi._backend at import)."""
    os.makedirs(folder, exist_ok=True)
    text = ('"""Written by setup.py when airi was built: did the compiled kernels '
            'build?"""\n'
            f"COMPILED = {bool(compiled)!r}\n"
            f"ERROR = {error!r}\n"
            f"PYTHON = {platform.python_version()!r}\n")
    path = os.path.join(folder, BUILD_INFO)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


class AiriBuildExt(build_ext):
    """build_ext that builds airi's kernels fast, never ships stale binaries, and
    records whether the build worked (see the module docstring)."""

    def initialize_options(self):
        super().initialize_options()
        self._pool = None
        self._errors = []            # first error line of each failed command
        self._errors_lock = threading.Lock()
        self._generated = {}         # .c written by Cython -> its .pyx
        self._compiled = {}          # source -> Future of its compile (build_extensions)

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:        # -j N on the command line wins
            self.parallel = _default_jobs()

    # ------------------------------------------------------------- the whole build
    def run(self):
        inplace = self.inplace   # setuptools clears it while building
        started = time.perf_counter()
        try:
            self._cythonize()
            super().run()
        except Exception as exc:  # no compiler, broken toolchain...
            self.inplace = inplace
            error = self._first_error() or f"{type(exc).__name__}: {exc}"
            self._remove_outputs()
            self._record(compiled=False, error=error)
            if os.environ.get("AIRI_REQUIRE_COMPILED", "0") == "1":
                raise RuntimeError("airi: the compiled kernels could not be built and "
                                   f"AIRI_REQUIRE_COMPILED=1: {error}") from exc
            print(f"airi: WARNING: the compiled kernels could not be built ({error}); "
                  "airi will run on its NumPy kernels.", file=sys.stderr)
        else:
            self._record(compiled=True)
            print(f"airi: compiled kernels ready in {time.perf_counter() - started:.1f} s "
                  f"({self.parallel} parallel jobs)")

    def _cythonize(self):
        """.pyx -> .c for every extension, in parallel, with the shared support code.
        Skipped for an extension whose .c this Cython already generated from the same
        inputs (a stamp in build/ keyed on contents: in pip's fresh build environment
        every file of Cython has a new timestamp, so Cython's own check redoes it)."""
        has_pyx = [e for e in self.extensions
                   if any(s.endswith(".pyx") for s in e.sources)]
        if not has_pyx:
            return
        for ext in has_pyx:   # which .c Cython will write from which .pyx (_build_key)
            for source in ext.sources:
                if source.endswith(".pyx"):
                    self._generated[source[:-4] + ".c"] = source
        shared = Extension(SHARED_UTILITY, [SHARED_UTILITY.replace(".", "/") + ".c"])
        stale = [e for e in has_pyx + [shared] if self.force
                 or _read(self._cython_stamp(e)) != self._cython_key(e)
                 or not all(os.path.exists(c) for c in _c_files(e))]
        if stale:
            from Cython.Build import cythonize
            stale_pyx = [e for e in stale if e is not shared]
            built = cythonize(stale_pyx + [shared], compiler_directives=CYTHON_DIRECTIVES,
                              shared_utility_qualified_name=SHARED_UTILITY,
                              nthreads=self.parallel if self.parallel > 1 else 0,
                              quiet=not self.verbose)
            for ext in stale:
                os.makedirs(self.build_temp, exist_ok=True)
                with open(self._cython_stamp(ext), "w") as f:
                    f.write(self._cython_key(ext))
        else:
            built = [shared]
        for ext in has_pyx:
            if ext not in stale:
                print(f"airi: {ext.name}: its .c is up to date (same .pyx and Cython)")
                ext.sources = _c_files(ext)
                built.append(ext)
        others = [e for e in self.extensions if e not in has_pyx]
        for ext in built:  # what setuptools' finalize_options sets on each extension
            ext._full_name = self.get_ext_fullname(ext.name)
            ext._file_name = self.get_ext_filename(ext._full_name)
            ext._links_to_dynamic = ext._needs_stub = False
        self.extensions[:] = built + others
        self.distribution.ext_modules = self.extensions

    def _cython_stamp(self, ext):
        return os.path.join(self.build_temp, ext.name + ".cython-key")

    def _cython_key(self, ext):
        """Hash of what Cython makes ``ext``'s .c from (not the .c's timestamps)."""
        h = hashlib.sha256()
        for part in (_version_of("Cython"), repr(sorted(CYTHON_DIRECTIVES.items())),
                     SHARED_UTILITY, ext.name):
            h.update(part.encode() + b"\0")
        for path in sorted(ext.sources) + _cython_inputs():
            if path.endswith(".c"):
                continue            # (the shared module's .c: made by Cython alone)
            h.update(path.encode() + b"\0")
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        return h.hexdigest()

    def build_extensions(self):
        self._configure_flags()
        self._capture_compiler_output()
        self.check_extensions_list(self.extensions)
        exts = self.extensions
        jobs = max(1, self.parallel or 1)
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool, \
                concurrent.futures.ThreadPoolExecutor(len(exts)) as per_extension:
            self._pool = pool
            # Every source of every extension to build, biggest first, on one queue:
            # the longest compile must not start last. build_extension then links
            # each extension when its objects are there.
            sources = [(_file_bytes(source), i, ext, source)
                       for i, ext in enumerate(exts) if not self._up_to_date(ext)
                       for source in sorted(ext.sources)]
            for _, _, ext, source in sorted(sources, key=lambda job: (-job[0], job[1])):
                self._compiled[source] = pool.submit(
                    self._compile_all, [source], **self._compile_arguments(ext))
            futures = [per_extension.submit(self.build_extension, ext) for ext in exts]
            failures = [f.exception() for f in futures if f.exception() is not None]
        self._pool = None
        if failures:
            raise failures[0]

    def _compile_arguments(self, ext):
        """What build_ext.build_extension passes to the compiler for ``ext``."""
        macros = ext.define_macros[:] + [(undef,) for undef in ext.undef_macros]
        return dict(output_dir=self.build_temp, macros=macros,
                    include_dirs=ext.include_dirs, debug=self.debug,
                    extra_postargs=ext.extra_compile_args or [], depends=ext.depends)

    def _up_to_date(self, ext):
        """True when build/ holds ``ext`` built from these sources, compiler and flags."""
        stamp = os.path.join(self.build_temp, ext.name + ".key")
        return (not self.force and os.path.exists(self.get_ext_fullpath(ext.name))
                and _read(stamp) == self._build_key(ext))

    def _configure_flags(self):
        if self.compiler.compiler_type == "msvc":
            opt = glue_opt = ["/O2"]
        else:
            opt = ["-O3", "-g0", "-fno-wrapv"]
            glue_opt = ["-O2", "-g0", "-fno-wrapv"]
        for ext in self.extensions:
            ext.extra_compile_args = glue_opt if ext.name == SHARED_UTILITY else opt

    # ------------------------------------------------------------- one extension
    def build_extension(self, ext):
        ext_path = self.get_ext_fullpath(ext.name)
        stamp = os.path.join(self.build_temp, ext.name + ".key")
        key = self._build_key(ext)
        if self._up_to_date(ext):
            with _print_lock:
                print(f"airi: {ext.name} is up to date (same sources, compiler and flags)")
            return
        for path in (ext_path, stamp):   # a failure below must leave nothing behind
            if os.path.exists(path):
                os.remove(path)
        super().build_extension(ext)
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        with open(stamp, "w") as f:
            f.write(key)

    def _build_key(self, ext):
        """Hash of everything the extension's binary depends on. A .c that Cython
        generated counts as its .pyx and Cython's version and directives: the .c
        itself names the temporary build environment of pip, which differs each time."""
        h = hashlib.sha256()
        compiler = getattr(self.compiler, "compiler_so", self.compiler.compiler_type)
        for part in (sys.version, sysconfig.get_platform(), repr(compiler),
                     repr(ext.extra_compile_args), repr(ext.extra_link_args),
                     repr(ext.define_macros), _version_of("numpy"), _version_of("Cython"),
                     repr(sorted(CYTHON_DIRECTIVES.items())), SHARED_UTILITY):
            h.update(part.encode() + b"\0")
        for source in sorted(ext.sources) + sorted(set(ext.depends) | set(_cython_inputs())):
            path = self._generated.get(source, source)
            if ext.name == SHARED_UTILITY and source.endswith(".c"):
                continue    # generated from Cython alone (its version is in the key)
            h.update(path.encode() + b"\0")
            with open(path, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
        return h.hexdigest()

    # ---------------------------------------------------- parallel, captured compiles
    def _capture_compiler_output(self):
        """The compiles that build_extensions queued (each source its own job) are
        picked up when build_extension asks for them, and every command runs through
        ``_call``, which keeps a failing command's first error line."""
        compile_all = self._compile_all = self.compiler.compile

        def compile_on_pool(sources, *args, **kwargs):
            if self._pool is None or not all(s in self._compiled for s in sources):
                return compile_all(sources, *args, **kwargs)
            return [self._compiled[s].result()[0] for s in sources]   # queued earlier

        self.compiler.compile = compile_on_pool
        if self.compiler.compiler_type != "msvc" and sys.platform != "darwin":
            # (MSVC sets up its own environment; on macOS ``call`` adds the deployment
            # target: both keep theirs, and a failure is recorded by its exception.)
            self.compiler.spawn = self._spawn
            self.compiler.call = self._call

    def _call(self, cmd, *, env=None, **kwargs):
        """Run one compiler command (the compiler's ``call``): echo its output with its
        time, keep its first error line, raise as ``subprocess.check_call`` would."""
        started = time.perf_counter()
        try:
            done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as exc:
            self._add_error(f"command {os.fspath(cmd[0])!r} could not run: "
                            f"{exc.strerror or exc}")
            raise
        with _print_lock:  # one command's output stays together
            sys.stdout.write(f"[{time.perf_counter() - started:5.1f} s] "
                             + " ".join(map(os.fspath, cmd)) + "\n" + done.stdout)
            sys.stdout.flush()
        if done.returncode != 0:
            self._add_error(first_error_line(done.stdout) or
                            f"command {os.fspath(cmd[0])!r} failed with exit code "
                            f"{done.returncode} and no output")
            raise subprocess.CalledProcessError(done.returncode, cmd)

    def _spawn(self, cmd, **kwargs):
        """The same for setuptools versions whose compilers run commands by ``spawn``."""
        try:
            self._call(cmd)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise ExecError(f"command {os.fspath(cmd[0])!r} failed: {exc}") from exc

    def _add_error(self, line):
        with self._errors_lock:
            self._errors.append(line)

    def _first_error(self):
        with self._errors_lock:
            return self._errors[0] if self._errors else None

    # ---------------------------------------------------------- outcome and cleanup
    def _outputs(self):
        """Every file a successful build would produce (build/ and, with --inplace,
        the copies in the source tree)."""
        build_py = self.get_finalized_command("build_py")
        for ext in self.extensions:
            if self.inplace:
                inplace_file, regular_file = self._get_inplace_equivalent(build_py, ext)
                yield inplace_file
                yield regular_file
            else:
                yield self.get_ext_fullpath(ext.name)
            yield os.path.join(self.build_temp, ext.name + ".key")

    def _remove_outputs(self):
        for path in self._outputs():
            if os.path.exists(path):
                os.remove(path)
                print(f"airi: removed {path} (the build failed: no stale binaries)")

    def _record(self, compiled, error=None):
        folders = [os.path.join(self.build_lib, "airi", "_ext")]
        if self.inplace:
            folders.append(os.path.join("airi", "_ext"))
        for folder in folders:
            write_build_info(folder, compiled, error)


def _default_jobs():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _file_bytes(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _c_files(ext):
    """The sources of ``ext`` as compiled: each .pyx replaced by the .c Cython writes."""
    return [s[:-4] + ".c" if s.endswith(".pyx") else s for s in ext.sources]


def _cython_inputs():
    """Files Cython may read beside a .pyx: any .pxd or C header under airi/_ext."""
    found = set()
    for pattern in ("*.pxd", "*.h"):
        found.update(glob.glob(os.path.join("airi", "_ext", "**", pattern), recursive=True))
    return sorted(found)


def _version_of(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return "none"


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _extensions():
    import numpy

    sources = sorted(glob.glob(os.path.join("airi", "_ext", "*.pyx")))
    c_dir = os.path.join("airi", "_ext", "src")
    # C sources compiled into one module: the direct convolution goes into _conv
    c_sources = {"_conv": sorted(glob.glob(os.path.join(c_dir, "direct_conv*.c")))}
    exts = [
        Extension(
            "airi._ext." + os.path.splitext(os.path.basename(src))[0],
            [src] + c_sources.get(os.path.splitext(os.path.basename(src))[0], []),
            include_dirs=[numpy.get_include(), c_dir],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            # a change to a C header rebuilds the module
            depends=sorted(glob.glob(os.path.join(c_dir, "*.h"))),
        )
        for src in sources
    ]
    return exts  # cythonized by AiriBuildExt (in parallel, with a shared module)


if __name__ == "__main__":  # pip and `python setup.py` run it as __main__; tests import it
    setup(ext_modules=_extensions(), cmdclass={"build_ext": AiriBuildExt})
