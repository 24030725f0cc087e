"""Model files: ``airi.save`` writes them atomically, ``airi.load`` never runs their code.

A model file is a short text header followed by a pickle stream (protocol 5)::

    AIRI-MODEL\\n
    format=2 airi=0.1.0 bytes=<length of the stream> crc32=<its CRC-32>\\n
    <pickle stream>

(format 1, without ``bytes`` and ``crc32``, is still read).

Why not plain ``pickle.load``: a pickle is a small program, and loading one can call any
function the file names (``os.system``, ``builtins.eval``, ...). Model files are shared and
downloaded, so :func:`load` runs the pickle through a restricted unpickler that admits
an explicit allowlist and refuses everything else *before* it is called:

- airi's own classes: layers (subclasses of :class:`airi.layers.base.Layer`), ``Sequential``,
  :class:`airi.Parameter`, and the public classes of ``airi.optim``, ``airi.lr_scheduler``
  and ``airi.losses``;
- NumPy array, dtype and scalar reconstruction, checked argument by argument;
- plain Python values: numbers, strings, bytes, tuples, lists, dicts, sets,
  ``collections.OrderedDict``, ``complex``, ``slice``, ``range``;
- classes that the user admitted with :func:`register_safe`.

Admitted classes are never *called* with arguments from the file: an object is created with
``cls.__new__(cls)`` and receives its saved attributes. The only methods that see data from
the file are a few ``__setstate__`` of airi's own that just assign (and validate) attributes
(``_REVIEWED_SETSTATE``); ``__init__``, ``__reduce__`` and the ``__setstate__`` of a user's
class never run. NumPy's pickled dtypes are checked against what NumPy itself would build,
because NumPy trusts the flags a pickle gives it (an object dtype marked "no objects" turns
raw bytes into object pointers).

After the stream is read, every object it built is checked against its class
(``check_state``), and the object graph's size and depth are bounded, so that nothing
read from a file decides how much memory or time airi spends (``checks``).

The package is split along its seams: ``errors`` (the two exceptions), ``allowlist`` (what
is admitted, user-admitted classes, aliases of moved classes), ``unpickler`` (the
restricted unpickler), ``checks`` (what is checked after unpickling: graph bounds, each
object against its class) and ``fileformat`` (the header and its checksum, atomic save
and the removal of stale temporary files, load).
"""
from .errors import ModelFileError, UnsafeModelError
from .allowlist import register_safe, unregister_safe, safe_classes, MOVED_CLASSES
from .unpickler import restricted_load
from .fileformat import save, load, read_header, MAGIC, FORMAT_VERSION

__all__ = [
    "save", "load", "register_safe", "unregister_safe", "safe_classes", "read_header",
    "restricted_load", "ModelFileError", "UnsafeModelError", "MAGIC", "FORMAT_VERSION",
    "MOVED_CLASSES",
]
