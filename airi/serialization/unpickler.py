"""The restricted unpickler behind :func:`airi.load`: the pure-Python unpickler with every
opcode that calls, builds or looks something up replaced by a checked version."""
import collections
import io
import math
import os
import pickle
import re
import struct
import sys
import types

import numpy as np

from .allowlist import (_REVIEWED_SETSTATE, _frombuffer, _is_admitted_airi_class,
                        _is_admitted_class, _own_setstate, _qualified, _reconstruct,
                        _resolve_global, _scalar)
from .checks import MAX_ELEMENTS, GraphTooLarge, check_graph, check_objects, hash_cost
from .errors import ModelFileError, UnsafeModelError

__all__ = ["restricted_load", "MAX_OBJECTS"]

#: The most containers and objects (lists, dicts, tuples, strings, bytes, floats, big
#: ints, airi objects) one file may make the loader build.
MAX_OBJECTS = MAX_ELEMENTS


# ---------------------------------------------------------------- restricted loader
def _make_dispatch():
    return dict(pickle._Unpickler.dispatch)


class _BoundedReader:
    """Reads ``file`` up to byte offset ``end`` and refuses to read past it, so a corrupt
    length field fails at once instead of allocating gigabytes."""

    def __init__(self, file, start, end, raise_truncated):
        self._file = file
        self._pos = start
        self.limit = end - start      # the most any single object can take
        self._end = end
        self._raise_truncated = raise_truncated

    def read(self, n=-1):
        left = self._end - self._pos
        if n is None or n < 0:
            n = left
        if n > left:
            self._raise_truncated(n, left)
        data = self._file.read(n)
        self._pos += len(data)
        return data

    def readline(self):
        data = self._file.readline()
        self._pos += len(data)
        return data


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with the opcodes that call, build or look things up
    replaced by checked versions (see the module docstring for the policy)."""

    dispatch = _make_dispatch()

    def __init__(self, reader, source, *, encoding="ASCII", airi_objects=True):
        super().__init__(reader, encoding=encoding)
        self._source = source
        self._max_len = reader.limit
        self._airi_objects = airi_objects
        self._pending = {}   # id -> object created here and waiting for its one BUILD
        self._sealed = {}    # id -> dtype that was built and verified (usable by arrays)
        self.created = []    # admitted objects created here, checked after the load
        self._objects = 0     # containers and objects built so far (see MAX_OBJECTS)
        self._key_costs = {}  # id -> (hash cost, key) of tuple keys already measured

    # -- errors
    def _unsafe(self, why, global_name=None):
        return UnsafeModelError(f"{self._source}: refused to load: {why} (nothing outside "
                                "airi's allowlist was run)", global_name)

    def _corrupt(self, why):
        return ModelFileError(f"{self._source}: corrupt airi model file: {why}")

    # -- globals
    def find_class(self, module, name):
        sys.audit("pickle.find_class", module, name)
        obj = None
        if isinstance(module, str) and isinstance(name, str):
            obj = _resolve_global(module, name)
            if (obj is not None and not self._airi_objects and isinstance(obj, type)
                    and _is_admitted_class(obj)):
                obj = None
        if obj is None:
            qualified = f"{module}.{name}"
            hint = ""
            if name[:1].isupper() and module.split(".")[0] not in (
                    "builtins", "os", "posix", "nt", "subprocess", "importlib", "numpy"):
                hint = (f" (if {name} is your own layer class and you trust this file, "
                        f"admit it with airi.register_safe({name}) before loading)")
            raise self._unsafe(f"global '{qualified}' is not on the allowlist of airi model "
                               f"files{hint}", qualified)
        return obj

    def _class_name(self, obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"

    # -- REDUCE: only the checked reconstruction callables
    def load_reduce(self):
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if not isinstance(args, tuple):
            raise self._corrupt("REDUCE arguments are not a tuple")
        checker = _REDUCERS.get(id(func))
        if checker is None or checker[0] is not func:
            if isinstance(func, type) and _is_admitted_class(func):
                name = self._class_name(func)
                raise self._unsafe(f"the file calls {name}(...) with arguments of its own; "
                                   "airi objects are only rebuilt from their saved "
                                   "attributes", name)
            raise self._unsafe(f"the file calls {type(func).__name__} object {func!r:.60}, "
                               "which is not an allowed reconstruction function")
        stack[-1] = checker[1](self, *args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    # -- NEWOBJ: admitted classes, no arguments
    def _new_object(self, cls, args, kwargs):
        if not (isinstance(cls, type) and _is_admitted_class(cls)):
            name = self._class_name(cls) if isinstance(cls, type) else repr(cls)[:60]
            raise self._unsafe(f"the file creates an object of {name}, which is not an "
                               "admitted class", name if isinstance(cls, type) else None)
        if args or kwargs:
            name = self._class_name(cls)
            raise self._unsafe(f"the file creates {name} with constructor arguments; airi "
                               "objects are only rebuilt from their saved attributes", name)
        obj = cls.__new__(cls)
        self._pending[id(obj)] = obj
        self.created.append(obj)
        return obj

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args, None))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new_object(cls, args, kwargs))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    # -- protocol 0/1 object opcodes, persistent ids, extension codes: never in airi files
    def load_inst(self):
        module = self.readline()[:-1].decode("ascii", "replace")
        name = self.readline()[:-1].decode("ascii", "replace")
        raise self._unsafe(f"INST opcode (protocol 0 object creation) of '{module}.{name}'",
                           f"{module}.{name}")
    dispatch[pickle.INST[0]] = load_inst

    def load_obj(self):
        raise self._unsafe("OBJ opcode (calls a class with arguments from the file)")
    dispatch[pickle.OBJ[0]] = load_obj

    def persistent_load(self, pid):
        raise self._unsafe("persistent ids are not allowed in airi model files")

    def _load_ext(self):
        raise self._unsafe("extension codes (copyreg registry) are not allowed in airi "
                           "model files")
    for _opcode in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_opcode[0]] = _load_ext
    del _opcode

    def _load_buffer(self):
        raise self._corrupt("out-of-band buffers are not used by airi model files")
    dispatch[pickle.NEXT_BUFFER[0]] = _load_buffer
    dispatch[pickle.READONLY_BUFFER[0]] = _load_buffer

    def load_bytearray8(self):
        n, = struct.unpack("<Q", self.read(8))
        if n > self._max_len:   # check before allocating
            raise self._corrupt(f"a {n}-byte bytearray in {self._max_len} bytes of data")
        b = bytearray(n)
        self.readinto(b)
        self.append(b)
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    # -- containers: only real lists, dicts and sets (never a method of another object)
    def _container(self, kinds, op):
        target = self.stack[-1]
        if type(target) not in kinds:
            raise self._unsafe(f"{op} on a {type(target).__name__} object (only on "
                               f"{'/'.join(k.__name__ for k in kinds)})")
        return target

    def load_append(self):
        value = self.stack.pop()
        self._container((list,), "APPEND").append(value)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        items = self.pop_mark()
        self._container((list,), "APPENDS").extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    # Hashing a tuple follows all of its references: a key built from shared tuples
    # (64 levels of (t, t)) would take 2**64 steps, so keys are measured first.
    def _keys(self, keys):
        try:
            for key in keys:
                hash_cost(key, self._key_costs)
        except GraphTooLarge as exc:
            raise self._corrupt(f"a dict key or set element: {exc}") from None
        return keys

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self._keys((key,))
        self._container((dict, collections.OrderedDict), "SETITEM")[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        target = self._container((dict, collections.OrderedDict), "SETITEMS")
        if len(items) % 2:
            raise self._corrupt("SETITEMS with an odd number of items")
        self._keys(items[0::2])
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise self._corrupt("DICT with an odd number of items")
        self._keys(items[0::2])
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})
    dispatch[pickle.DICT[0]] = load_dict

    def load_additems(self):
        items = self.pop_mark()
        self._container((set,), "ADDITEMS").update(self._keys(items))
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self):
        items = self.pop_mark()
        self.append(frozenset(self._keys(items)))
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    # -- BUILD: only on objects created here, once, by type
    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if self._pending.pop(id(inst), None) is not inst:
            raise self._unsafe(f"BUILD (set the state of) a {type(inst).__name__} object "
                               "the loader did not just create")
        if type(inst) is np.ndarray:
            self._build_array(inst, state)
        elif isinstance(inst, np.dtype):
            self._build_dtype(inst, state)
        else:
            self._build_object(inst, state)
    dispatch[pickle.BUILD[0]] = load_build

    def _build_object(self, obj, state):
        """Give an admitted object its saved attributes. airi's own ``__setstate__``
        methods that were reviewed for this (_REVIEWED_SETSTATE) are called; a user
        class's ``__setstate__`` never is (its attributes are set directly)."""
        method = _own_setstate(type(obj))
        name = _qualified(method) if method is not None else None
        if name in _REVIEWED_SETSTATE:
            if name == "airi.parameter.Parameter.__setstate__":
                self._check_parameter_state(state)
            else:
                self._check_attributes(obj, state)
                self._check_not_class_attributes(obj, state)
            method(obj, state)
            return
        if method is not None and _is_admitted_airi_class(type(obj)):
            raise self._unsafe(f"{name} has not been reviewed for loading untrusted files",
                               self._class_name(type(obj)))
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        if state is not None:
            self._check_attributes(obj, state)
            self._check_not_class_attributes(obj, state)
            if not hasattr(obj, "__dict__"):
                raise self._corrupt(f"{type(obj).__name__} objects have no attribute dict")
            obj.__dict__.update(state)
        if slots is not None:
            self._check_attributes(obj, slots)
            for key, value in slots.items():
                self._slot_descriptor(obj, key).__set__(obj, value)
        from ..layers.base import Layer
        if isinstance(obj, Layer):   # as Layer.__setstate__ does: caches start empty
            for key in type(obj)._cache_names:
                obj.__dict__[key] = None

    def _check_parameter_state(self, state):
        if not (isinstance(state, dict) and "data" in state
                and set(state) <= {"data", "name"} and type(state["data"]) is np.ndarray
                and isinstance(state.get("name", ""), str)):
            raise self._corrupt("a Parameter's state must be {'data': ndarray, 'name': str}")

    def _check_attributes(self, obj, state):
        if not isinstance(state, dict):
            raise self._corrupt(f"the state of a {type(obj).__name__} is a "
                                f"{type(state).__name__}, not a dict of attributes")
        for key in state:
            if not isinstance(key, str) or (key.startswith("__") and key.endswith("__")):
                raise self._unsafe(f"attribute name {key!r:.60} for a {type(obj).__name__}")

    def _check_not_class_attributes(self, obj, state):
        """A file sets instance attributes only: never one the class defines as a
        method, a property (any descriptor) or a private class-level setting such as
        ``_cache_names``, which methods loop over (a file could make it
        range(10**15)). A public data attribute with a class-level default (``alpha =
        0.1`` in a user's layer) may be overridden per instance, as Python allows."""
        for key in state:
            for klass in type(obj).__mro__:
                if key not in vars(klass):
                    continue
                value = vars(klass)[key]
                if key.startswith("_") or callable(value) or hasattr(value, "__get__"):
                    raise self._unsafe(
                        f"{type(obj).__name__}.{key} is defined by the class "
                        f"{klass.__name__}; a model file cannot set it")
                break

    def _slot_descriptor(self, obj, name):
        for klass in type(obj).__mro__:
            descriptor = vars(klass).get(name)
            if descriptor is not None:
                if isinstance(descriptor, types.MemberDescriptorType):
                    return descriptor
                break
        raise self._unsafe(f"{name!r} is not a slot of {type(obj).__name__}")

    # -- NumPy
    def _sealed_dtype(self, dtype, what):
        if not isinstance(dtype, np.dtype):
            raise self._corrupt(f"{what}: expected a dtype, got {type(dtype).__name__}")
        if self._sealed.get(id(dtype)) is not dtype:
            raise self._unsafe(f"{what}: uses a dtype before its state was set and checked")
        return dtype

    def _shape(self, shape, what):
        if not (isinstance(shape, tuple)
                and all(type(n) is int and n >= 0 for n in shape)):
            raise self._corrupt(f"{what}: bad shape {shape!r:.80}")
        return shape

    def _build_array(self, array, state):
        if isinstance(state, tuple) and len(state) == 5:
            version, shape, dtype, fortran, data = state
            if version != 1:
                raise self._corrupt(f"array state version {version!r:.20}")
        elif isinstance(state, tuple) and len(state) == 4:
            shape, dtype, fortran, data = state
        else:
            raise self._corrupt("unexpected array state")
        self._shape(shape, "array")
        self._sealed_dtype(dtype, "array")
        if not isinstance(fortran, (bool, int)) or not isinstance(
                data, (bytes, bytearray, str, list)):
            raise self._corrupt("unexpected array state")
        if dtype.itemsize == 0 and math.prod(shape) > 0:
            # no bytes, any number of elements: 10**12 of them in a 150-byte file
            raise self._corrupt(f"an array of {math.prod(shape):,} elements of size 0")
        if dtype.hasobject and not (type(data) is list and len(data) == math.prod(shape)):
            # NumPy does not check this length: a short list reads past its end (crash).
            raise self._corrupt(f"an object array of shape {shape} needs "
                                f"{math.prod(shape)} items")
        array.__setstate__(state)   # NumPy checks the data length and object lists

    def _build_dtype(self, dtype, state):
        """Set the state of a dtype made by ``numpy.dtype(typestr)``, after checking that
        it describes exactly what NumPy itself would build. NumPy's ``__setstate__``
        trusts what it is given: an object dtype marked "holds no objects" turns an
        array's raw bytes into object pointers, a big-endian object dtype crashes its
        own repr, a datetime without a unit crashes at once. So the state is checked
        against a dtype built the ordinary way *before* it is applied, and the result is
        compared again after. The dtype is used by no array yet (arrays only accept
        dtypes that passed here), so a refused one harms nothing."""
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            raise self._corrupt("unexpected dtype state")
        endian, subarray, names, fields, elsize, alignment, flags = state[1:8]
        if isinstance(endian, bytes):       # a Python 2 pickle read with encoding="bytes"
            endian = endian.decode("ascii", "replace")
        if not all(type(v) is int for v in (elsize, alignment, flags)):
            raise self._corrupt("unexpected dtype state")
        # Byte order: "|" exactly for the types without one (objects, bytes, void...).
        if endian not in (("|",) if dtype.byteorder == "|" else ("<", ">", "=")):
            raise self._unsafe(f"byte order {endian!r:.10} for a {dtype.kind!r} dtype")
        # Datetimes need their unit: NumPy crashes on a datetime state without one.
        if dtype.kind in "mM" and not (len(state) == 9 and isinstance(state[8], tuple)
                                       and len(state[8]) == 2
                                       and isinstance(state[8][1], tuple)):
            raise self._corrupt("a datetime dtype without its unit")
        expected = self._expected_dtype(dtype, endian, subarray, names, fields, elsize,
                                        flags)
        sized = dtype.kind in "VUS"
        if (flags != expected.flags
                or (sized and (elsize, alignment) != (expected.itemsize, expected.alignment))
                or (not sized and (elsize, alignment) != (-1, -1))):
            raise self._unsafe(f"a dtype state that NumPy would never write (flags {flags}, "
                               f"size {elsize}, alignment {alignment} for {expected})")
        dtype.__setstate__(state)
        if dtype.kind in "mM":               # NumPy checked the unit itself
            expected = np.dtype(dtype.str)
        if not (dtype.num == expected.num and dtype.type is expected.type
                and dtype.flags == expected.flags and dtype.itemsize == expected.itemsize
                and dtype.alignment == expected.alignment
                and dtype.hasobject == expected.hasobject
                and dtype.str == expected.str and dtype == expected):
            raise self._unsafe(f"a dtype state that NumPy would never write ({expected})")
        self._sealed[id(dtype)] = dtype

    def _expected_dtype(self, dtype, endian, subarray, names, fields, elsize, flags):
        """What NumPy's ordinary constructors build from this state (raises if nothing)."""
        if (subarray is not None or names is not None) and dtype.kind != "V":
            raise self._corrupt("fields or a subarray on a non-void dtype")
        if (names is None) != (fields is None):
            raise self._corrupt("dtype names and fields disagree")
        try:
            if names is not None:
                return self._expected_struct(names, fields, elsize, flags)
            if subarray is not None:
                if not (isinstance(subarray, tuple) and len(subarray) == 2):
                    raise self._corrupt("unexpected dtype subarray")
                base = self._sealed_dtype(subarray[0], "dtype subarray")
                if base.hasobject:
                    raise self._unsafe("subarray dtypes of objects are not allowed")
                return np.dtype((base, self._shape(subarray[1], "dtype subarray")))
            if dtype.kind in "VS":
                if not 0 < elsize < 2 ** 31:
                    raise self._corrupt(f"dtype size {elsize}")
                return np.dtype(f"|{dtype.kind}{elsize}")
            if dtype.kind == "U":
                if not 0 < elsize < 2 ** 31 or elsize % 4:
                    raise self._corrupt(f"dtype size {elsize}")
                return np.dtype(f"{endian}U{elsize // 4}")
            return dtype.newbyteorder(endian) if endian != "|" else np.dtype(dtype.str)
        except ModelFileError:
            raise
        except Exception as exc:
            raise self._corrupt(f"a dtype NumPy cannot build ({exc})") from exc

    def _expected_struct(self, names, fields, elsize, flags):
        if not (isinstance(names, tuple) and all(isinstance(n, str) for n in names)
                and len(set(names)) == len(names) and isinstance(fields, dict)
                and set(names) <= set(fields)):
            raise self._corrupt("unexpected dtype fields")
        titles = set()
        for field in fields.values():
            if not (isinstance(field, tuple) and len(field) in (2, 3)
                    and type(field[1]) is int and field[1] >= 0):
                raise self._corrupt("unexpected dtype field")
            if self._sealed_dtype(field[0], "dtype field").hasobject:
                raise self._unsafe("structured dtypes with object fields are not allowed")
            if len(field) == 3:
                titles.add(field[2])
        if not set(fields) <= set(names) | titles:
            raise self._corrupt("unexpected dtype fields")
        spec = {"names": list(names), "formats": [fields[n][0] for n in names],
                "offsets": [fields[n][1] for n in names], "itemsize": elsize}
        if any(len(fields[n]) == 3 for n in names):
            spec["titles"] = [fields[n][2] if len(fields[n]) == 3 else None for n in names]
        return np.dtype(spec, align=bool(flags & 0x80))   # 0x80: NPY_ALIGNED_STRUCT

    # The reconstruction callables, with their arguments checked.
    def _call_reconstruct(self, subtype=None, shape=None, typecode=None, *extra):
        if (subtype is not np.ndarray or shape != (0,) or typecode not in (b"b", "b")
                or extra):
            raise self._unsafe("numpy _reconstruct called with arguments NumPy never "
                               "writes (only plain ndarrays are allowed)")
        array = _reconstruct(np.ndarray, (0,), b"b")
        self._pending[id(array)] = array
        return array

    def _call_frombuffer(self, buf=None, dtype=None, shape=None, order=None, *extra):
        if not isinstance(buf, (bytes, bytearray)) or order not in ("C", "F") or extra:
            raise self._corrupt("unexpected numpy _frombuffer arguments")
        self._sealed_dtype(dtype, "array")
        self._shape(shape, "array")
        if dtype.hasobject or dtype.itemsize == 0:
            raise self._unsafe(f"raw bytes as an array of dtype {dtype}")
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)

    def _call_dtype(self, typestr=None, align=False, copy=True, *extra):
        if isinstance(typestr, bytes):     # a Python 2 pickle read with encoding="bytes"
            typestr = typestr.decode("ascii", "replace")
        if (not isinstance(typestr, str) or not re.fullmatch(r"[A-Za-z]\d{0,6}", typestr)
                or align not in (0, 1) or copy not in (0, 1) or extra):
            raise self._unsafe(f"numpy.dtype called with arguments NumPy never writes "
                               f"({typestr!r:.40})")
        dtype = np.dtype(typestr, align=bool(align), copy=True)   # never NumPy's singleton
        self._pending[id(dtype)] = dtype
        return dtype

    def _call_scalar(self, dtype=None, data=None, *extra):
        self._sealed_dtype(dtype, "numpy scalar")
        if dtype.hasobject or not isinstance(data, bytes) or extra:
            raise self._unsafe("numpy scalar from something other than raw bytes")
        return _scalar(dtype, data)

    def _call_complex(self, real=0.0, imag=0.0, *extra):
        if extra or not all(type(v) in (int, float) for v in (real, imag)):
            raise self._corrupt("unexpected complex arguments")
        return complex(real, imag)

    def _call_slice_or_range(self, kind, *args):
        if not 1 <= len(args) <= 3 or not all(v is None or type(v) is int for v in args):
            raise self._corrupt(f"unexpected {kind.__name__} arguments")
        if kind is range and None in args:
            raise self._corrupt("unexpected range arguments")
        return kind(*args)

    def _call_container(self, kind, *args):
        allowed = {set: (list, tuple, set), frozenset: (list, tuple, set),
                   bytearray: (bytes,), collections.OrderedDict: (list,)}[kind]
        if len(args) > 1 or (args and type(args[0]) not in allowed):
            raise self._corrupt(f"unexpected {kind.__name__} arguments")
        if kind is collections.OrderedDict and args and not all(
                type(p) is tuple and len(p) == 2 for p in args[0]):
            raise self._corrupt("unexpected OrderedDict arguments")
        if args and kind in (set, frozenset):
            self._keys(args[0])
        elif args and kind is collections.OrderedDict:
            self._keys([pair[0] for pair in args[0]])
        return kind(*args)


_REDUCERS = {}
for _func, _checker in [
        (_reconstruct, _RestrictedUnpickler._call_reconstruct),
        (_frombuffer, _RestrictedUnpickler._call_frombuffer),
        (_scalar, _RestrictedUnpickler._call_scalar),
        (np.dtype, _RestrictedUnpickler._call_dtype),
        (complex, _RestrictedUnpickler._call_complex),
        (slice, lambda self, *a: self._call_slice_or_range(slice, *a)),
        (range, lambda self, *a: self._call_slice_or_range(range, *a)),
        (set, lambda self, *a: self._call_container(set, *a)),
        (frozenset, lambda self, *a: self._call_container(frozenset, *a)),
        (bytearray, lambda self, *a: self._call_container(bytearray, *a)),
        (collections.OrderedDict,
         lambda self, *a: self._call_container(collections.OrderedDict, *a))]:
    if _func is not None:
        _REDUCERS[id(_func)] = (_func, _checker)
del _func, _checker


# Every opcode that creates a container or an object counts towards MAX_OBJECTS, so a
# file cannot make the loader build tens of millions of objects (a 100 MB file of
# EMPTY_LIST opcodes would be 50 million lists) before the graph check sees them.
def _counting(handler):
    def counted(self):
        self._objects += 1
        if self._objects > MAX_OBJECTS:
            raise self._corrupt(f"the file builds more than {MAX_OBJECTS:,} objects "
                                "(a model file never needs that)")
        handler(self)
    counted.__name__ = handler.__name__
    return counted


for _opcode in (pickle.EMPTY_LIST, pickle.EMPTY_DICT, pickle.EMPTY_SET, pickle.EMPTY_TUPLE,
                pickle.LIST, pickle.DICT, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2,
                pickle.TUPLE3, pickle.FROZENSET, pickle.NEWOBJ, pickle.NEWOBJ_EX,
                pickle.REDUCE, pickle.BINBYTES, pickle.SHORT_BINBYTES, pickle.BINBYTES8,
                pickle.BINUNICODE, pickle.SHORT_BINUNICODE, pickle.BINUNICODE8,
                pickle.BINFLOAT, pickle.LONG1, pickle.LONG4, pickle.BYTEARRAY8):
    _RestrictedUnpickler.dispatch[_opcode[0]] = _counting(
        _RestrictedUnpickler.dispatch[_opcode[0]])
del _opcode


def restricted_load(file, source, *, size=None, encoding="ASCII", airi_objects=True):
    """Unpickle from binary ``file`` (positioned at the pickle stream) with the allowlist
    of :func:`load`. Also usable for other pickled data that must not run code (such as
    CIFAR-10 batches: ``airi_objects=False, encoding="bytes"``).

    Parameters
    ----------
    file : binary file object
    source : str
        Named in error messages (usually the path).
    size : int, optional
        Bytes left in ``file`` (taken from the file itself when it has a descriptor).
    encoding : str
        How to decode Python 2 ``str`` objects (as in :func:`pickle.load`).
    airi_objects : bool
        Whether airi's own classes (and those admitted with :func:`register_safe`) are
        admitted, or only arrays and plain values.

    Raises
    ------
    UnsafeModelError
        The stream asks for something outside the allowlist.
    ModelFileError
        The stream is corrupt or truncated (never a bare pickle error).
    """
    start = file.tell()
    if size is None:
        try:
            size = os.fstat(file.fileno()).st_size - start
        except (AttributeError, OSError, io.UnsupportedOperation):
            data = file.read()
            file, start, size = io.BytesIO(data), 0, len(data)

    def truncated(wanted, left):
        raise ModelFileError(f"{source}: truncated airi model file: the data needs {wanted} "
                             f"more bytes but the file has {left} left")

    reader = _BoundedReader(file, start, start + size, truncated)
    unpickler = _RestrictedUnpickler(reader, source, encoding=encoding,
                                     airi_objects=airi_objects)
    try:
        obj = unpickler.load()
    except ModelFileError:
        raise
    except RecursionError as exc:
        raise ModelFileError(f"{source}: corrupt airi model file: nested too "
                             "deeply") from exc
    except Exception as exc:   # any pickle/struct/NumPy error on bad data: a clear message
        raise ModelFileError(f"{source}: corrupt or truncated airi model file "
                             f"({type(exc).__name__}: {exc})") from exc
    check_loaded(obj, unpickler.created, source)
    return obj


def check_loaded(obj, created, source):
    """The checks of :mod:`.checks` on what a file built: the graph's size and depth,
    then every object against its class (``check_state``)."""
    try:
        check_graph(obj)
    except GraphTooLarge as exc:
        raise ModelFileError(f"{source}: refused: {exc}") from None
    try:
        check_objects(created)
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelFileError(f"{source}: refused: {_one_line(exc)} (not something "
                             "airi writes: a damaged or tampered file)") from None


def _one_line(exc):
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

