"""The model file format: a short text header, then a pickle stream (protocol 5)::

    AIRI-MODEL\\n
    format=1 airi=0.1.0\\n
    <pickle stream>

:func:`save` writes it atomically; :func:`load` reads it through the restricted unpickler.
"""
import contextlib
import os
import pickle
import secrets
import stat
import types
import warnings

import numpy as np

from .allowlist import _is_admitted_global, _qualified
from .errors import ModelFileError
from .unpickler import restricted_load

__all__ = ["save", "load", "read_header", "MAGIC", "FORMAT_VERSION"]

MAGIC = b"AIRI-MODEL\n"
FORMAT_VERSION = 1             # bump when a new airi writes files an older one cannot read
PICKLE_PROTOCOL = 5            # arrays travel as raw bytes (no copy on save)
_MAX_HEADER_LINE = 256


def _airi_version():
    from .. import __version__
    return __version__

# ------------------------------------------------------------------------ the header
def _header_line():
    return f"format={FORMAT_VERSION} airi={_airi_version()}\n".encode("ascii")


def _read_header(file, source):
    magic = file.read(len(MAGIC))
    if magic != MAGIC:
        if not magic:
            raise ModelFileError(f"{source}: the file is empty, not an airi model file")
        hint = ""
        if magic[:1] == b"\x80":
            hint = (" (it looks like a plain pickle; airi.load only reads files written by "
                    "airi.save, because plain pickles can run code when loaded)")
        raise ModelFileError(f"{source}: not an airi model file: it does not start with the "
                             f"AIRI-MODEL header{hint}")
    line = file.readline(_MAX_HEADER_LINE)
    fields = {}
    if line.endswith(b"\n"):
        try:
            fields = dict(item.split("=", 1) for item in line.decode("ascii").split())
        except ValueError:   # not ASCII, or an item without '='
            fields = {}
    if not fields.get("format", "").isdigit():
        raise ModelFileError(f"{source}: damaged airi model file header: {line[:80]!r}")
    fields["format"] = int(fields["format"])
    if fields["format"] > FORMAT_VERSION:
        needed = fields.get("requires") or fields.get("airi", "a newer version")
        raise ModelFileError(
            f"{source}: written by airi {fields.get('airi', '?')} in model file format "
            f"{fields['format']}; this airi ({_airi_version()}) reads format "
            f"{FORMAT_VERSION} at most: install airi >= {needed} to load it")
    return fields


def read_header(path):
    """The header of model file ``path`` as a dict: ``format`` (int), ``airi`` (the
    version that wrote it). Raises :class:`ModelFileError` if it is not a model file."""
    source = os.fspath(path)
    with open(source, "rb") as f:
        return _read_header(f, source)


# ------------------------------------------------------------------------ save / load
def load(path):
    """Load what :func:`save` wrote to ``path``, without running code from the file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    The saved object: a model, a checkpoint dict, arrays, ...

    Raises
    ------
    UnsafeModelError
        The file asks for a global outside the allowlist (for example ``posix.system``),
        or for a forbidden way of building an object; the message names it. Nothing it
        asked for was run. Admit your own layer classes with :func:`register_safe`.
    ModelFileError
        Not a loadable airi model file: empty, no header, truncated, corrupt, or written
        in a newer format (the message says which airi version reads it).
    OSError
        The file cannot be read (missing, permissions).
    """
    source = os.fspath(path)
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    with open(source, "rb") as f:
        _read_header(f, source)
        start = f.tell()
        size = os.fstat(f.fileno()).st_size - start
        if size <= 0:
            raise ModelFileError(f"{source}: the file holds only the airi header, no model "
                                 "data (was saving interrupted?)")
        obj = restricted_load(f, source, size=size)
        if f.read(1):
            raise ModelFileError(f"{source}: corrupt airi model file: unexpected data after "
                                 "the end of the model")
    return obj


class _CheckingPickler(pickle.Pickler):
    """Notes the classes and functions that :func:`load` would refuse."""

    def __init__(self, file, protocol):
        super().__init__(file, protocol=protocol)
        self.refused = {}

    def reducer_override(self, obj):
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, np.ufunc)):
            if not _is_admitted_global(obj):
                self.refused[_qualified(obj)] = obj
        return NotImplemented


def _open_new_file(path):
    """Create ``path`` (which must not exist) for binary writing. A separate function so
    that tests can simulate a full disk."""
    return open(path, "xb")


def _fsync_directory(directory):
    """Make the rename itself durable. Not every platform or file system allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(obj, path):
    """Save ``obj`` (a model, a checkpoint dict, arrays, ...) to ``path``, atomically.

    The data goes to a temporary file in the same folder, is flushed to disk, and only
    then renamed over ``path``: if anything fails midway (an object that cannot be
    pickled, a full disk), the previous file at ``path`` is left intact and the
    temporary file is removed. Gradients and cached activations are not saved.

    Parameters
    ----------
    obj : object
        Anything :func:`load` admits; a warning names classes or functions it would
        refuse (register your own layer classes with :func:`register_safe`).
    path : str or os.PathLike
    """
    target = os.fspath(path)
    if isinstance(target, bytes):
        target = os.fsdecode(target)
    if os.path.isdir(target):
        raise IsADirectoryError(21, "cannot save the model: the path is a directory", target)
    # Write through a symlink to the file it points to, as a plain write would.
    real = os.path.realpath(target)
    directory = os.path.dirname(real) or "."
    tmp = os.path.join(directory,
                       f".{os.path.basename(real)}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            with _open_new_file(tmp) as f:
                f.write(MAGIC)
                f.write(_header_line())
                pickler = _CheckingPickler(f, PICKLE_PROTOCOL)
                pickler.dump(obj)
                f.flush()
                os.fsync(f.fileno())
            _copy_mode(real, tmp)
            os.replace(tmp, real)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        if exc.errno is not None and exc.filename in (None, tmp):
            raise OSError(exc.errno, f"cannot save the model ({exc.strerror}); any previous "
                          "file was left unchanged", target) from exc
        raise
    except Exception as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(f"while saving {target}; any previous file was left unchanged")
        raise
    _fsync_directory(directory)
    if pickler.refused:
        names = ", ".join(sorted(pickler.refused))
        warnings.warn(f"airi.save: {target} contains {names}, which airi.load refuses "
                      "unless admitted first with airi.register_safe(cls)", UserWarning,
                      stacklevel=2)


def _copy_mode(existing, tmp):
    """Keep the permissions of the file being replaced (a new file gets the umask's)."""
    try:
        mode = stat.S_IMODE(os.stat(existing).st_mode)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)
