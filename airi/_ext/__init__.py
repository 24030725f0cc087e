"""airi's compiled kernels (Cython, and C in src/). Private: airi.functional reaches them
through the kernel namespaces of airi._backend.

A user who runs ``python -m airi.train`` (or pytest) from the repository root imports
airi from the source folder, which holds the ``.pyx`` sources but no compiled modules
when airi was installed with a plain ``pip install .``. So that the compiled kernels
still run there, this package also searches the ``airi/_ext`` folders of the other
entries of ``sys.path`` (the installed copy in site-packages). ``airi._backend`` checks
that what it finds speaks the kernel API version it expects.
"""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))


def _other_ext_dirs():
    seen = {os.path.normcase(_here)}
    for entry in sys.path:
        candidate = os.path.abspath(os.path.join(entry or os.getcwd(), "airi", "_ext"))
        key = os.path.normcase(candidate)
        if key not in seen and os.path.isdir(candidate):
            seen.add(key)
            yield candidate


__path__.extend(_other_ext_dirs())  # noqa: F821 (__path__ is set for packages)
