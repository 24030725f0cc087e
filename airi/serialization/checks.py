"""What ``airi.load`` checks after the pickle is read: no value from a file decides how
much memory or time airi (or the user's code) spends on what it loaded.

Three checks, all bounded by the size of the file itself:

- **The object graph** (:func:`check_graph`). A pickle can share one object from many
  places: 64 nested levels of ``[x, x]`` take a few hundred bytes but 2**64 steps to
  print or compare. The graph is walked once (shared objects visited once) while
  counting how many elements a *full* traversal, which follows every reference, would
  meet; a file over :data:`MAX_ELEMENTS` or nested deeper than :data:`MAX_DEPTH` is
  refused, with the path to where it happens. A ``range`` counts as its length (it costs
  nothing to load but as much as its length to iterate).
- **Keys before hashing** (:func:`hash_cost`): a tuple key is hashed through all of its
  references, so the same sharing in a dict key or a set element would hang the loader
  itself; the unpickler measures such a key before it is inserted.
- **Every object against its class** (:func:`check_objects`): each object the file
  built is checked with its class's ``check_state()`` (layers: the checks of their
  constructor; optimizers, schedules, losses, Sequential, Parameter: theirs), turning a
  ValueError into :class:`ModelFileError` naming the class and attribute.

The limits are far above what airi's own files need (a model or checkpoint holds a few
thousand objects, nested about ten levels deep) and are stated in the README.
"""
import reprlib

import numpy as np

__all__ = ["MAX_ELEMENTS", "MAX_DEPTH", "GraphTooLarge", "check_graph", "check_objects",
           "hash_cost"]

#: The most elements a full traversal of what a file holds may meet (references to a
#: shared object counted each time; the elements of a ``range`` counted too).
MAX_ELEMENTS = 10_000_000
#: The deepest nesting of containers and objects a file may hold.
MAX_DEPTH = 100
#: The most a dict key or set element may cost to hash (tuples nested in tuples).
MAX_KEY_ELEMENTS = 100_000

_PATH_SEGMENTS = 10


class GraphTooLarge(ValueError):
    """The object graph exceeds a bound; the message says where."""


_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None), slice, np.dtype,
           type)


def _children(obj):
    """The children of a container or object and a function giving child i's label
    (``[i]``, ``[key]``, or `` Class.attribute``: a new path segment per object), or
    None for a leaf."""
    kind = type(obj)
    if kind in (list, tuple):
        return obj, lambda i: f"[{i}]"
    if kind in (set, frozenset):
        return list(obj), lambda i: "{...}"
    if isinstance(obj, dict):
        keys = list(obj)
        flat = [item for key in keys for item in (key, obj[key])]
        return flat, lambda i: f"[{reprlib.repr(keys[i // 2])}]"
    if kind is np.ndarray:
        return (list(obj.ravel()) if obj.dtype.hasobject else ()), lambda i: f"[{i}]"
    if isinstance(obj, _LEAVES) or isinstance(obj, (range, np.generic)):
        return None
    name = type(obj).__name__
    names, values = [], []
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        for key, value in attributes.items():
            names.append(key)
            values.append(value)
    for klass in type(obj).__mro__:       # __slots__ (e.g. Parameter's _data and name)
        slots = vars(klass).get("__slots__", ())
        for slot in ((slots,) if isinstance(slots, str) else slots):
            if slot in ("__dict__", "__weakref__"):
                continue
            try:
                values.append(object.__getattribute__(obj, slot))
                names.append(slot)
            except AttributeError:
                pass
    return values, lambda i: f" {name}.{names[i]}"


def _leaf_cost(obj):
    if type(obj) is range:
        return len(obj) + 1
    return 1


def _describe_path(labels):
    if len(labels) > _PATH_SEGMENTS:
        labels = labels[:_PATH_SEGMENTS] + ["..."]
    path = "".join(labels).strip()
    return path or "the top level"


def measure(root, max_elements=MAX_ELEMENTS, max_depth=MAX_DEPTH):
    """The number of elements a full traversal of ``root`` meets (see module docstring).

    Raises
    ------
    GraphTooLarge
        Over ``max_elements`` or deeper than ``max_depth``, naming the path.
    """
    children = _children(root)
    if children is None:
        cost = _leaf_cost(root)
        _check_total(cost, max_elements, lambda: [], root)
        return cost
    costs = {}              # id -> full cost of a container/object already measured
    on_path = {id(root)}
    # frame: [object, children, label of child i, next index, cost so far, own label]
    stack = [[root, children[0], children[1], 0, 1, ""]]

    def path(extra=None):
        labels = [frame[5] for frame in stack]
        return labels + ([extra] if extra is not None else [])

    while stack:
        frame = stack[-1]
        items, index = frame[1], frame[3]
        if index == len(items):
            stack.pop()
            on_path.discard(id(frame[0]))
            costs[id(frame[0])] = frame[4]
            if stack:
                stack[-1][4] += frame[4]
                _check_total(stack[-1][4], max_elements, path, None)
            continue
        frame[3] = index + 1
        child = items[index]
        if type(child) in _FAST_LEAVES:
            frame[4] += 1
            continue
        known = costs.get(id(child))
        if known is not None:
            frame[4] += known
        elif id(child) in on_path:
            frame[4] += 1                  # a cycle: printing shows it as [...]
        else:
            grandchildren = _children(child)
            if grandchildren is None:
                frame[4] += _leaf_cost(child)
                if type(child) is range:
                    _check_total(frame[4], max_elements,
                                 lambda: path(frame[2](index)), child)
                continue
            if len(stack) >= max_depth:
                raise GraphTooLarge(
                    f"the data is nested more than {max_depth} levels deep at "
                    f"{_describe_path(path(frame[2](index)))}")
            stack.append([child, grandchildren[0], grandchildren[1], 0, 1,
                          frame[2](index)])
            on_path.add(id(child))
            continue
        _check_total(frame[4], max_elements, path, None)
    return costs[id(root)]


_FAST_LEAVES = frozenset({str, bytes, int, float, bool, type(None)})


def _check_total(cost, max_elements, labels, leaf):
    if cost > max_elements:
        what = f"a range of {len(leaf):,} elements" if type(leaf) is range else "the data"
        raise GraphTooLarge(
            f"{what} at {_describe_path(labels())} would take more than "
            f"{max_elements:,} elements to walk through (a model file never needs that; "
            "a file reaches it by referring to the same objects over and over)")


def check_graph(root):
    """Refuse (GraphTooLarge) what would take too long to traverse; see :func:`measure`."""
    measure(root)


def hash_cost(key, memo):
    """Elements met when hashing ``key`` (tuples and frozensets nest); ``memo`` maps ids
    of measured keys to their cost (kept by the caller across one load). Raises
    GraphTooLarge beyond :data:`MAX_KEY_ELEMENTS`."""
    if type(key) not in (tuple, frozenset):
        return 1
    known = memo.get(id(key))
    if known is None:
        # the key is kept in the memo too, so its id is not reused during the load
        known = memo[id(key)] = (measure(key, MAX_KEY_ELEMENTS, MAX_DEPTH), key)
    return known[0]


def check_objects(objects):
    """Run ``check_state()`` on every object built from the file whose class has one.

    Raises
    ------
    ValueError
        From the first object that fails (naming its class and attribute).
    """
    for obj in objects:
        check = getattr(type(obj), "check_state", None)
        if check is not None:
            check(obj)
