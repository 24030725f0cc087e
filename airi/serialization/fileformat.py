"""The model file format: a short text header, then a pickle stream (protocol 5)::

    AIRI-MODEL\\n
    format=2 airi=0.1.0 bytes=00000000000000012345 crc32=1c291ca3\\n
    <pickle stream>

``bytes`` is the length of the pickle stream and ``crc32`` its CRC-32 (zlib's, 8 hex
digits): :func:`load` checks both before reading the stream, so a damaged file (a flipped
bit, a cut, a splice) is refused with "checksum mismatch: the file is damaged" instead of
loading wrong weights. A checksum detects damage, not tampering: anyone can write a
matching one, which is why the stream is still read by the restricted unpickler.
Format 1 (before airi 0.1.0's issue 16) had no ``bytes``/``crc32``; such files still load.

:func:`save` writes atomically: a temporary file ``.NAME.<hex>.tmp`` beside the target,
flushed, then renamed over it. While it is being written its writer holds an exclusive
``flock`` on it; a later save to the same target removes temporary files of that target
that nobody holds a lock on and that were last written more than
:data:`STALE_TEMP_SECONDS` ago (left by a process that was killed while saving). Where
``fcntl`` is missing (Windows) nothing is removed.
"""
import contextlib
import os
import pickle
import re
import secrets
import stat
import time
import types
import warnings
import zlib

try:
    import fcntl
except ImportError:          # Windows: no flock; stale temp files are left alone
    fcntl = None

import numpy as np

from .allowlist import _is_admitted_global, _qualified
from .errors import ModelFileError
from .unpickler import restricted_load

__all__ = ["save", "load", "read_header", "MAGIC", "FORMAT_VERSION"]

MAGIC = b"AIRI-MODEL\n"
FORMAT_VERSION = 2             # bump when a new airi writes files an older one cannot read
PICKLE_PROTOCOL = 5            # arrays travel as raw bytes (no copy on save)
_MAX_HEADER_LINE = 256
#: A temporary file nobody holds a lock on is removed by the next save to its target
#: only when it was last written longer ago than this (a writer that has just created
#: its file may not hold the lock yet).
STALE_TEMP_SECONDS = 10
_CHUNK = 1 << 20


def _airi_version():
    from .. import __version__
    return __version__

# ------------------------------------------------------------------------ the header
def _header_line(size=0, crc=0):
    """The second header line; the same length whatever ``size`` and ``crc`` are, so
    that :func:`save` can write it first and fill them in at the end."""
    return (f"format={FORMAT_VERSION} airi={_airi_version()} bytes={size:020d} "
            f"crc32={crc:08x}\n").encode("ascii")


class _ChecksumWriter:
    """Passes writes on to ``file`` while computing their CRC-32 and length."""

    def __init__(self, file):
        self._file = file
        self.crc = 0
        self.size = 0

    def write(self, data):
        view = data.raw() if isinstance(data, pickle.PickleBuffer) else memoryview(data)
        self.crc = zlib.crc32(view, self.crc)
        self.size += view.nbytes
        return self._file.write(data)


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
    if fields["format"] >= 2:
        size, crc = fields.get("bytes", ""), fields.get("crc32", "")
        if not (size.isdigit() and re.fullmatch(r"[0-9a-f]{8}", crc)):
            raise ModelFileError(f"{source}: damaged airi model file header (format 2 needs "
                                 f"bytes=N crc32=8 hex digits): {line[:120]!r}")
        fields["bytes"] = int(size)
    return fields


def _verify_payload(file, source, fields, size):
    """Compare the stream (``size`` bytes from the current position) with the header's
    length and CRC-32, reading it in chunks (the memory used does not depend on the
    file)."""
    expected = fields["bytes"]
    if size < expected:
        raise ModelFileError(f"{source}: truncated airi model file: the header says "
                             f"{expected} bytes of model data, the file holds {size} (was "
                             "saving interrupted?)")
    if size > expected:
        raise ModelFileError(f"{source}: corrupt airi model file: unexpected data after the "
                             f"end of the model (the header says {expected} bytes of model "
                             f"data, the file holds {size})")
    crc = 0
    left = size
    while left:
        chunk = file.read(min(_CHUNK, left))
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        left -= len(chunk)
    if left or f"{crc:08x}" != fields["crc32"]:
        raise ModelFileError(f"{source}: checksum mismatch: the file is damaged (the model "
                             f"data's CRC-32 is {crc:08x}, the header says "
                             f"{fields['crc32']}); it was changed after airi saved it")


def read_header(path):
    """The header of model file ``path`` as a dict: ``format`` (int), ``airi`` (the
    version that wrote it) and, from format 2 on, ``bytes`` (int, the length of the
    model data) and ``crc32`` (its CRC-32, 8 hex digits). Raises
    :class:`ModelFileError` if it is not a model file (the checksum is not verified
    here: :func:`load` does)."""
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
        Not a loadable airi model file: empty, no header, truncated, damaged ("checksum
        mismatch: the file is damaged"), corrupt, written in a newer format (the message
        says which airi version reads it), or holding objects no airi writes (a layer
        failing its constructor's checks, data too large or deep to walk through).
    OSError
        The file cannot be read (missing, permissions).
    """
    source = os.fspath(path)
    if isinstance(source, bytes):
        source = os.fsdecode(source)
    with open(source, "rb") as f:
        fields = _read_header(f, source)
        start = f.tell()
        size = os.fstat(f.fileno()).st_size - start
        if fields["format"] >= 2:
            _verify_payload(f, source, fields, size)
            f.seek(start)
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
    base = os.path.basename(real)
    remove_stale_temp_files(directory, base)
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
    try:
        try:
            replaced = False
            with _open_new_file(tmp) as f:
                _lock(f)
                f.write(MAGIC)
                header_at = f.tell()
                f.write(_header_line())
                counted = _ChecksumWriter(f)
                pickler = _CheckingPickler(counted, PICKLE_PROTOCOL)
                pickler.dump(obj)
                f.seek(header_at)
                f.write(_header_line(counted.size, counted.crc))
                f.flush()
                os.fsync(f.fileno())
                if fcntl is not None:
                    # renamed while still locked: no cleaner can take it for stale
                    _copy_mode(real, tmp)
                    os.replace(tmp, real)
                    replaced = True
            if not replaced:
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


def _lock(file):
    """Hold an exclusive flock on the temporary file while writing it (released when it
    is closed, or when the process dies): the mark of a live writer."""
    if fcntl is None:
        return
    with contextlib.suppress(OSError):   # a file system without locks: best effort
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def remove_stale_temp_files(directory, base):
    """Remove ``.BASE.<hex>.tmp`` files in ``directory`` that no process is writing: no
    lock held on them (their writer died, e.g. SIGKILL during a save) and last written
    more than :data:`STALE_TEMP_SECONDS` ago. Temporary files of other targets, other
    names and files a live process holds locked are left alone.

    Returns
    -------
    list of str
        The names removed.
    """
    if fcntl is None:
        return []
    pattern = re.compile(r"\.%s\.[0-9a-f]{8,32}\.tmp\Z" % re.escape(base))
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not pattern.match(entry.name):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode) or now - info.st_mtime < STALE_TEMP_SECONDS:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # still the same file (not replaced since we looked): remove it
            if os.fstat(fd).st_ino == os.stat(entry.path, follow_symlinks=False).st_ino:
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:              # locked by its writer (alive), or gone meanwhile
            pass
        finally:
            os.close(fd)
    return removed


def _copy_mode(existing, tmp):
    """Keep the permissions of the file being replaced (a new file gets the umask's)."""
    try:
        mode = stat.S_IMODE(os.stat(existing).st_mode)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)
