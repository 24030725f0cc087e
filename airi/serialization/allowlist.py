"""What :func:`airi.load` admits: airi's own classes, checked NumPy reconstructors, plain
values, and the classes a user admitted with :func:`register_safe`.

Module paths are part of the file format: a file records ``module.name`` for every
class. When a class moves, its old path goes into ``MOVED_CLASSES`` so that files written
before the move keep loading.
"""
import collections
import contextlib
import re
import sys

import numpy as np

__all__ = ["register_safe", "unregister_safe", "safe_classes", "MOVED_CLASSES"]

# -------------------------------------------------------------- user-admitted classes
_registry = {}    # (module, qualname) -> class admitted by register_safe


def register_safe(cls):
    """Admit a class of your own (typically a custom layer) in files read by
    :func:`load`. Returns ``cls``, so it also works as a class decorator.

    Only do this for your own classes: objects of an admitted class are rebuilt with
    ``cls.__new__(cls)`` and get their saved attributes (``__init__`` and
    ``__setstate__`` are not called), so a file can only fill in attributes.

    Parameters
    ----------
    cls : type
        A class defined at module level (not a builtin or an exception class).

    Returns
    -------
    type
        ``cls`` itself.

    Raises
    ------
    TypeError
        If ``cls`` is not a class.
    ValueError
        For builtins, exception classes and classes defined inside a function.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_safe expects a class, got {type(cls).__name__} {cls!r}")
    if cls.__module__ == "builtins" or issubclass(cls, BaseException):
        raise ValueError(f"register_safe: refusing to admit {_qualified(cls)}; it is meant "
                         "for your own layer (or other model) classes")
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"register_safe: {cls.__qualname__} is defined inside a function, "
                         "so pickle cannot save it by name; define it at module level")
    _registry[(cls.__module__, cls.__qualname__)] = cls
    return cls


def unregister_safe(cls):
    """Withdraw a class admitted with :func:`register_safe` (no error if it was not).

    Parameters
    ----------
    cls : type
    """
    key = (cls.__module__, cls.__qualname__)
    if _registry.get(key) is cls:
        del _registry[key]


@contextlib.contextmanager
def safe_classes(*classes):
    """Admit ``classes`` for the duration of a ``with`` block::

        with airi.serialization.safe_classes(MyLayer):
            model = airi.load("model.pkl")

    Parameters
    ----------
    *classes : type
        Classes to admit, as with :func:`register_safe`.

    Yields
    ------
    None
        On exit the allowlist is restored to what it was before the block.
    """
    saved = dict(_registry)
    try:
        for cls in classes:
            register_safe(cls)
        yield
    finally:
        _registry.clear()
        _registry.update(saved)


# ------------------------------------------------------- classes that moved between modules
# (old module, name) -> (new module, name). Files written before the move record the old
# path; the class is looked up at its new one (and must still be an admitted airi class).
MOVED_CLASSES = {
    ("airi.model", "Sequential"): ("airi.sequential", "Sequential"),
}


# ----------------------------------------------------------------- what is admitted
# Public classes of these modules are admitted (optimizers, schedules, losses).
_CLASS_MODULES = ("airi.optim", "airi.lr_scheduler", "airi.losses")
# airi modules that may be imported to look a class up (normally `import airi` already did).
_IMPORTABLE_PREFIXES = ("airi.layers", "airi.sequential", "airi.parameter") + _CLASS_MODULES
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _under(module, prefixes):
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _airi_bases():
    """The airi base classes whose subclasses (defined in airi) are admitted. Resolved at
    load time because parts of airi may be added after this module was imported."""
    from ..layers.base import Layer
    from ..parameter import Parameter
    bases = [Layer, Parameter]
    sequential = vars(sys.modules["airi"]).get("Sequential")
    if isinstance(sequential, type):
        bases.append(sequential)
    return tuple(bases)


def _is_admitted_airi_class(cls):
    """True for a class defined in airi that is a layer, Sequential or Parameter, or a
    public class of airi.optim, airi.lr_scheduler or airi.losses."""
    if not isinstance(cls, type) or issubclass(cls, BaseException):
        return False
    module = getattr(cls, "__module__", "") or ""
    if not module.startswith("airi."):
        return False
    if issubclass(cls, _airi_bases()):
        return True
    return _under(module, _CLASS_MODULES) and not cls.__name__.startswith("_")


# airi's own __setstate__ methods that only assign attributes (and validate them), so
# load may call them with a state read from an untrusted file. An airi class with any
# other __setstate__ is refused until it is reviewed and listed here (a test checks).
_REVIEWED_SETSTATE = frozenset({
    "airi.layers.base.Layer.__setstate__",
    "airi.parameter.Parameter.__setstate__",
    "airi.optim.Optimizer.__setstate__",
})


def _own_setstate(cls):
    """The ``__setstate__`` that ``cls`` defines or inherits (None: the default)."""
    for klass in cls.__mro__:
        method = vars(klass).get("__setstate__")
        if method is not None:
            return method
    return None


def _qualified(obj):
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def _is_admitted_class(cls):
    key = (getattr(cls, "__module__", None), getattr(cls, "__qualname__", None))
    return _registry.get(key) is cls or _is_admitted_airi_class(cls)


def _numpy_global(path):
    """The NumPy object at ``path`` (dotted, under numpy) or None if this NumPy lacks it."""
    obj = np
    for part in path.split(".")[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


_reconstruct = _numpy_global("numpy._core.multiarray._reconstruct")
_scalar = _numpy_global("numpy._core.multiarray.scalar")
_frombuffer = _numpy_global("numpy._core.numeric._frombuffer")

# Callables a file may call through REDUCE, by the names pickle records for them (NumPy 2
# writes numpy._core, NumPy 1 wrote numpy.core). Each one's arguments are checked by a
# method of the unpickler (_REDUCERS below).
_CALLABLE_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("builtins", "range"): range,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
# Globals a file may mention as plain values (never called).
_VALUE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("builtins", "Ellipsis"): Ellipsis,
    ("builtins", "NotImplemented"): NotImplemented,
}
for _name in ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
              "uint64", "float16", "float32", "float64", "complex64", "complex128"):
    _VALUE_GLOBALS[("numpy", _name)] = getattr(np, _name)
del _name
_SAFE_GLOBALS = {**_CALLABLE_GLOBALS, **_VALUE_GLOBALS}
_SAFE_GLOBAL_IDS = {id(obj) for obj in _SAFE_GLOBALS.values() if obj is not None}


def _lookup_airi_class(module, name):
    """The admitted airi class ``module.name``, or None. Looks in the module's namespace
    directly (never getattr, which could run a module-level __getattr__), and imports
    only airi modules that may hold model classes."""
    if not _IDENTIFIER.match(name):
        return None
    module, name = MOVED_CLASSES.get((module, name), (module, name))
    mod = sys.modules.get(module)
    if mod is None:
        if not _under(module, _IMPORTABLE_PREFIXES):
            return None
        import importlib
        try:
            mod = importlib.import_module(module)
        except ImportError:
            return None
    cls = vars(mod).get(name)
    if (isinstance(cls, type) and cls.__module__ == module and cls.__qualname__ == name
            and _is_admitted_airi_class(cls)):
        return cls
    return None


def _resolve_global(module, name):
    """The object a file may use for global ``module.name``, or None when refused."""
    key = (module, name)
    obj = _SAFE_GLOBALS.get(key)
    if obj is not None:
        return obj
    obj = _registry.get(key)
    if obj is not None:
        return obj
    if module.startswith("airi."):
        return _lookup_airi_class(module, name)
    return None


def _is_admitted_global(obj):
    """Would the loader admit ``obj`` (a class or function met while saving)?"""
    return id(obj) in _SAFE_GLOBAL_IDS or _is_admitted_class(obj)

