"""Errors raised by :mod:`airi.datasets`.

Every error names the file (or folder) it is about. Catch :class:`DatasetError` to handle
anything that went wrong while finding, downloading or reading a data set.
"""

__all__ = ["DatasetError", "DatasetNotFoundError", "DownloadError", "UnsafeDatasetError"]


class DatasetError(ValueError):
    """A data file is missing, corrupt or not in the expected format."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The files of a data set are not where they were looked for (and no download was
    asked for). The message says what to download and where to put it."""


class DownloadError(DatasetError, OSError):
    """A download failed (network error, HTTP error, checksum mismatch). Nothing
    half-written is left behind; the message says what to download by hand and where
    to put it."""


class UnsafeDatasetError(DatasetError):
    """A pickled data file asks for a global that its format never holds (for example
    ``posix.system``); it was refused before anything ran."""
