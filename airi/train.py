"""``python -m airi.train`` (and the ``airi-train`` command): train a model from the
command line. The command line itself lives in :mod:`airi.cli`; this module is its
entry point, kept under the name users type."""
import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
