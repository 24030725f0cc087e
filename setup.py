"""Build script for airi's compiled kernels.

``pip install .`` compiles every ``airi/_ext/*.pyx`` with optimisation and, when the
compiler accepts it, OpenMP. A compiler without OpenMP still builds (the kernels then
run on one thread), and a failed compilation of the extensions is fatal only when
``AIRI_REQUIRE_COMPILED=1``: otherwise airi installs and runs on its NumPy kernels.
"""
import os
import sys
import glob
import shutil
import tempfile
import textwrap

from setuptools import setup, Extension
from setuptools.command.build_ext import build_ext


def _compiler_accepts(compiler, flags, link_flags=()):
    """True when ``compiler`` compiles and links a tiny OpenMP program with ``flags``."""
    tmp = tempfile.mkdtemp(prefix="airi-omp-")
    try:
        src = os.path.join(tmp, "omp_check.c")
        with open(src, "w") as f:
            f.write(textwrap.dedent("""
                #include <omp.h>
                int main(void) {
                    int n = 0;
                    #pragma omp parallel reduction(+:n)
                    n += 1;
                    return n > 0 ? 0 : 1;
                }
            """))
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=list(flags))
        compiler.link_executable(objs, os.path.join(tmp, "omp_check"),
                                 extra_postargs=list(link_flags))
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class AiriBuildExt(build_ext):
    """build_ext that adds OpenMP where the compiler supports it."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            opt, omp, omp_link = ["/O2"], ["/openmp"], []
        else:
            opt, omp, omp_link = ["-O3"], ["-fopenmp"], ["-fopenmp"]
        if os.environ.get("AIRI_NO_OPENMP", "0") == "1":
            use_omp = False
            print("airi: building the kernels WITHOUT OpenMP (AIRI_NO_OPENMP=1)")
        else:
            use_omp = _compiler_accepts(self.compiler, omp, omp_link)
            if not use_omp:
                print("airi: building the kernels WITHOUT OpenMP (the compiler does not "
                      "support it); their prange loops run serially")
        for ext in self.extensions:
            ext.extra_compile_args = opt + (omp if use_omp else [])
            ext.extra_link_args = omp_link if use_omp else []
        super().build_extensions()

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, broken toolchain...
            if os.environ.get("AIRI_REQUIRE_COMPILED", "0") == "1":
                raise
            print(f"airi: WARNING: the compiled kernels could not be built ({exc}); "
                  "airi will run on its NumPy kernels.", file=sys.stderr)


def _extensions():
    import numpy
    from Cython.Build import cythonize

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
    return cythonize(
        exts,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "initializedcheck": False,
            "cdivision": True,
            "nonecheck": False,
        },
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": AiriBuildExt})
