"""Fetch one file over HTTP(S), verify its checksum, and only then put it in place.

The file is streamed into a temporary file in the destination folder (so that the final
rename is atomic on the same file system), hashed while it is written, and renamed to its
real name only when the checksum matches. On any failure the temporary file is removed:
a folder never holds a half-written data file under its real name.
"""
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ._errors import DownloadError

__all__ = ["download_file", "file_digest"]

CHUNK_BYTES = 1 << 16
TIMEOUT_SECONDS = 30


def file_digest(path, algorithm="sha256"):
    """Hex digest of a file, read in chunks (works for files larger than memory)."""
    digest = _new_hash(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _new_hash(algorithm):
    # The published checksums of MNIST and CIFAR-10 are MD5: used for integrity, not
    # security, which FIPS-mode Pythons only allow when said explicitly.
    return hashlib.new(algorithm, usedforsecurity=False)


def _join_url(base, filename):
    if not base.endswith("/"):
        base += "/"
    return base + filename


class _ChecksumMismatch(Exception):
    pass


class _NullProgress:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress_bar(total, desc, show):
    """A tqdm bar on stderr when ``show`` (default: stderr is a terminal), else a no-op.

    tqdm is a declared dependency; the import is lazy and optional so that reading data
    sets never depends on it."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return _NullProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NullProgress()
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                leave=False, file=sys.stderr)


def _fetch_verified(url, target, checksum, algorithm, show_progress):
    """Stream ``url`` into a temporary file beside ``target``; rename it to ``target``
    only if its digest equals ``checksum``. Leaves nothing behind on failure."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"only http(s) URLs are supported, got {url!r}")
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                    suffix=".part")
    try:
        digest = _new_hash(algorithm)
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = _progress_bar(total, target.name, show_progress)
            received = 0
            try:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
            finally:
                bar.close()
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received != total:
            raise _ChecksumMismatch(f"connection closed after {received} of {total} bytes")
        actual = digest.hexdigest()
        if actual != checksum.lower():
            raise _ChecksumMismatch(f"{algorithm} checksum mismatch: got {actual}, "
                                    f"expected {checksum.lower()}")
        os.replace(tmp_name, target)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a partial file behind.
        try:
            os.remove(tmp_name)
        except FileNotFoundError:
            pass
        raise


def _describe(error):
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect ({error.reason})"
    return str(error) or type(error).__name__


def download_file(filename, mirrors, folder, checksum, algorithm="md5", show_progress=None):
    """Download ``filename`` into ``folder`` from the first mirror that serves it intact.

    Parameters
    ----------
    filename : str
        Name of the file, appended to each mirror's base URL; also its name in ``folder``.
    mirrors : sequence of str
        Base URLs (``https://host/path/``) tried in order.
    folder : str or Path
        Destination folder, created if missing.
    checksum : str
        Expected hex digest of the file.
    algorithm : str
        ``hashlib`` name of the digest (``"md5"`` or ``"sha256"``).
    show_progress : bool or None
        Draw a progress bar; None means only when stderr is a terminal.

    Returns
    -------
    Path
        ``folder / filename``, verified.

    Raises
    ------
    DownloadError
        When no mirror delivered the file with the expected checksum. The message lists
        each attempt and says what to download by hand and where to put it.
    """
    folder = Path(folder)
    target = folder / filename
    mirrors = [mirrors] if isinstance(mirrors, str) else list(mirrors)
    failures = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        bases = mirrors
    except OSError as error:
        failures.append(f"cannot create folder {str(folder)!r}: {error}")
        bases = []
    for base in bases:
        url = _join_url(base, filename)
        try:
            _fetch_verified(url, target, checksum, algorithm, show_progress)
            return target
        except Exception as error:  # any failure of this mirror: try the next one
            failures.append(f"{url}: {_describe(error)}")
    by_hand = _join_url(mirrors[0], filename) if mirrors else filename
    tried = "\n  ".join(failures) if failures else "(no mirror given)"
    raise DownloadError(
        f"could not download {filename!r}:\n  {tried}\n"
        f"Download it by hand from {by_hand} ({algorithm} {checksum}) and put it in "
        f"{str(folder.resolve())!r}, then load the data set again.")
