"""The two errors of :func:`airi.load`."""

__all__ = ["ModelFileError", "UnsafeModelError"]


class ModelFileError(ValueError):
    """The file is not a loadable airi model file (missing header, empty, truncated,
    corrupt, or written in a newer format). The message names the file."""


class UnsafeModelError(ModelFileError):
    """The file asks for something outside the allowlist (a global such as
    ``posix.system``, or a forbidden way of building an object). Nothing it asked for ran.

    Attributes
    ----------
    global_name : str or None
        The refused global as pickle records it, ``"module.name"``.
    """

    def __init__(self, message, global_name=None):
        super().__init__(message)
        self.global_name = global_name

