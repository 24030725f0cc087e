"""Build script for airi's compiled kernels.

``pip install .`` compiles every ``airi/_ext/*.pyx`` (and the C sources of
``airi/_ext/src``) with optimisation. The kernels are single-threaded: airi's own
threads (airi/_parallel.py) run them on slices of the batch, so no OpenMP is needed. A
failed compilation of the extensions is fatal only when ``AIRI_REQUIRE_COMPILED=1``:
otherwise airi installs and runs on its NumPy kernels.
"""
import os
import sys
import glob

from setuptools import setup, Extension
from setuptools.command.build_ext import build_ext


class AiriBuildExt(build_ext):
    """build_ext with optimisation flags, whose failure is not fatal (see run)."""

    def build_extensions(self):
        opt = ["/O2"] if self.compiler.compiler_type == "msvc" else ["-O3"]
        for ext in self.extensions:
            ext.extra_compile_args = opt
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
