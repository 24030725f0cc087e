"""``python -m airi`` is a short form of ``python -m airi.train``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
