"""Export an airi model to ONNX: ``airi.onnx.export(model, path, input_shape)``.

ONNX is the file format every inference runtime reads (ONNX Runtime, browsers, phones)
and Netron draws. :func:`export` writes the *evaluation-mode* network (Dropout as the
identity, BatchNorm with its running statistics), whatever mode the model is in, with a
dynamic batch axis, and leaves the model exactly as it was (mode, parameters, running
statistics and caches). Building the file needs only the ``onnx`` package (the extra
``airi[onnx]``); running it needs a runtime such as ``onnxruntime``.

How a model becomes a graph
---------------------------
Each layer is turned into ONNX nodes by an *exporter*, a function
``fn(layer, graph, x) -> y`` that receives the :class:`OnnxGraph` being built and the
name of the layer's input tensor, adds nodes and weights, and returns the name of the
layer's output tensor. They are looked up, for each layer, in this order:

1. the layer's own method ``to_onnx(self, graph, x)`` (the hook for a layer of your own);
2. the exporter registered for its class with :func:`register_exporter` (airi's layers
   are registered below); a subclass uses its base class's exporter only when it does
   not override ``forward`` (a different forward would be exported wrongly);
3. otherwise :class:`OnnxExportError`, naming the layer, its place in the model and the
   two ways to make it exportable.

Containers (``Sequential``, ``Residual``) export their sub-layers with
:meth:`OnnxGraph.layer`, so weights and nodes get the names airi's ``state_dict`` uses
(``0.W``, ``3.body.1.running_mean``).

Conventions of the file
-----------------------
- input ``"input"``, shape ``(batch, *input_shape)``, float32; output ``"output"``,
  shape ``(batch, ...)``; ``batch`` is a symbolic (dynamic) dimension;
- weights are stored as float32 (a float64 model is rounded once, on export);
- ``metadata_props`` holds ``airi_version`` and ``airi_input_shape`` (plus anything
  passed as ``metadata``);
- the opset is :data:`DEFAULT_OPSET` unless ``opset`` says otherwise (any from
  :data:`MIN_OPSET` to the newest the installed ``onnx`` knows); the file's IR version
  is the oldest that opset allows, so older runtimes read it too.
"""
import contextlib
import copy
import numbers
import os
import secrets

import numpy as np

__all__ = ["export", "build", "OnnxGraph", "OnnxExportError", "register_exporter",
           "exporter_for", "DEFAULT_OPSET", "MIN_OPSET", "INPUT_NAME", "OUTPUT_NAME",
           "BATCH_DIM"]

#: The opset written when ``export`` is given ``opset=None``: supported by onnx >= 1.12
#: and ONNX Runtime >= 1.11, and it has every operator airi's layers need.
DEFAULT_OPSET = 17
#: The oldest opset accepted: 13 is where Softmax/LogSoftmax got their per-axis meaning.
MIN_OPSET = 13
INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_DIM = "batch"


class OnnxExportError(ValueError):
    """A model that cannot be written as ONNX: a layer without an exporter, or an
    exporter (or ``to_onnx`` method) that built an invalid graph. The message names the
    layer and its place in the model."""


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("airi.onnx.export needs the onnx package: "
                          "pip install 'airi[onnx]' (or pip install onnx)") from exc
    return onnx


# ============================================================== the graph being built
class OnnxGraph:
    """The ONNX graph under construction, handed to every exporter and ``to_onnx``.

    An exporter adds weights with :meth:`initializer`, nodes with :meth:`node`, exports
    sub-layers with :meth:`layer`, and returns the name of its output tensor. Names are
    prefixed with the layer's place in the model (``"3.body.0"``) and made unique, so an
    exporter never has to worry about clashes.

    Attributes
    ----------
    opset : int
        The opset of the file being written (an exporter may choose operators by it).
    scope : str
        The dotted place in the model of the layer being exported (``""`` for the model).
    """

    def __init__(self, opset):
        self._onnx = _import_onnx()
        self.opset = int(opset)
        self.nodes = []
        self.initializers = []
        self._used = {INPUT_NAME, OUTPUT_NAME}
        self._tensors = {INPUT_NAME}    # every tensor a node may read
        self._scope = []

    @property
    def scope(self):
        return ".".join(self._scope)

    def _unique(self, name):
        name = name or "tensor"
        candidate, k = name, 1
        while candidate in self._used:
            candidate, k = f"{name}_{k}", k + 1
        self._used.add(candidate)
        return candidate

    def _scoped(self, name):
        return f"{self.scope}.{name}" if self.scope else name

    def initializer(self, name, array):
        """Add a constant tensor (a weight, a running statistic) and return its name.

        Parameters
        ----------
        name : str
            Its name inside the layer, e.g. ``"W"``; stored as ``"<scope>.W"``.
        array : array_like
            Floating-point values are stored as float32, integers as int64.

        Returns
        -------
        str
            The tensor's name, to use as a node input.
        """
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        elif array.dtype.kind in "iu":
            array = array.astype(np.int64)
        else:
            raise TypeError(f"OnnxGraph.initializer: {self._scoped(name)} must be a float "
                            f"or integer array, got dtype {array.dtype}")
        unique = self._unique(self._scoped(name))
        self.initializers.append(
            self._onnx.numpy_helper.from_array(np.ascontiguousarray(array), unique))
        self._tensors.add(unique)
        return unique

    def node(self, op_type, inputs, **attributes):
        """Add one ONNX node with a single output and return the output's name.

        Parameters
        ----------
        op_type : str
            An operator of the default ONNX domain, e.g. ``"Conv"``, ``"Relu"``.
        inputs : list of str
            Names of tensors already in the graph (the layer's input ``x``, names
            returned by :meth:`initializer` or by earlier nodes).
        **attributes
            The operator's attributes (ints, floats, strings or lists of them).

        Returns
        -------
        str
            The name of the node's output tensor (``"<scope>.<op_type>"``, made unique).
        """
        if isinstance(inputs, str):
            raise TypeError(f"{self._where()}: OnnxGraph.node({op_type!r}, inputs): inputs "
                            f"must be a list of tensor names, got the string {inputs!r}")
        for name in inputs:
            if name and name not in self._tensors:
                raise OnnxExportError(f"{self._where()}: node {op_type} reads {name!r}, "
                                      "which no earlier node or initializer produced")
        output = self._unique(self._scoped(op_type))
        self.nodes.append(self._onnx.helper.make_node(
            op_type, list(inputs), [output], name=output, **attributes))
        self._tensors.add(output)
        return output

    def layer(self, layer, x, name):
        """Export ``layer`` applied to the tensor ``x``, its names under ``name``.

        Containers call this for each sub-layer (``Sequential`` with ``"0"``, ``"1"``,
        ...; ``Residual`` with ``"body"`` and ``"shortcut"``).

        Returns
        -------
        str
            The name of the sub-layer's output tensor.
        """
        name = str(name)
        if not name or "." in name and not all(name.split(".")):
            raise ValueError(f"{self._where()}: OnnxGraph.layer needs a name for the "
                             f"sub-layer (e.g. its attribute name), got {name!r}")
        self._scope.append(name)
        try:
            return self._export(layer, x)
        finally:
            self._scope.pop()

    def _where(self):
        return f"layer {self.scope!r}" if self.scope else "the model"

    def _export(self, layer, x):
        fn = exporter_for(layer)
        if fn is None:
            raise OnnxExportError(_no_exporter_message(layer, self._where()))
        y = fn(layer, self, x)
        if not isinstance(y, str) or y not in self._tensors:
            raise OnnxExportError(
                f"{self._where()} ({type(layer).__name__}): its exporter returned "
                f"{y!r}, not the name of a tensor of the graph (return the name given by "
                "graph.node(...), or x itself)")
        return y


def _no_exporter_message(layer, where):
    kind = type(layer).__name__
    base = _registered_base(type(layer))
    why = (f"it subclasses {base.__name__} but overrides forward, so {base.__name__}'s "
           "exporter would not describe it" if base is not None
           else f"airi has no ONNX exporter for {kind}")
    return (f"airi.onnx.export: {where} ({kind}) cannot be exported: {why}. Give "
            f"{kind} a method to_onnx(self, graph, x) that adds its nodes and returns "
            f"the output's name, or call airi.onnx.register_exporter({kind}, fn) "
            "(README: 'Using a model elsewhere')")


# ================================================================== the exporters
_EXPORTERS = {}


def register_exporter(cls, fn=None):
    """Register ``fn(layer, graph, x) -> output name`` as the ONNX exporter of ``cls``.

    Usable as a decorator (``@register_exporter(MyLayer)``). A layer's own ``to_onnx``
    method wins over a registered exporter. Returns ``fn``.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_exporter: expected a class, got {cls!r}")
    if fn is None:
        return lambda f: register_exporter(cls, f)
    if not callable(fn):
        raise TypeError(f"register_exporter: fn must be callable, got {fn!r}")
    _EXPORTERS[cls] = fn
    return fn


def _registered_base(cls):
    for base in cls.__mro__:
        if base in _EXPORTERS:
            return base
    return None


def exporter_for(layer):
    """The function that exports ``layer``, ``fn(layer, graph, x) -> str``, or None.

    The layer's ``to_onnx`` method first; then the exporter registered for its class,
    or for a base class whose ``forward`` it does not override.
    """
    method = getattr(layer, "to_onnx", None)
    if callable(method):
        return lambda layer_, graph, x: method(graph, x)
    base = _registered_base(type(layer))
    if base is None:
        return None
    if getattr(type(layer), "forward", None) is not getattr(base, "forward", None):
        return None
    return _EXPORTERS[base]


def _pair_list(value):
    return [int(v) for v in value]


def _bias_input(layer, graph):
    b = getattr(layer, "params", {}).get("b")
    return [graph.initializer("b", b.data)] if b is not None else []


def _export_conv2d(layer, graph, x):
    ph, pw = layer.pad
    inputs = [x, graph.initializer("W", layer.W.data)] + _bias_input(layer, graph)
    return graph.node("Conv", inputs, kernel_shape=_pair_list(layer.filter_size),
                      strides=_pair_list(layer.stride), pads=[int(ph), int(pw),
                                                              int(ph), int(pw)],
                      dilations=[1, 1], group=1)


def _export_linear(layer, graph, x):
    # airi's W is (in, out), which is Gemm's B as it is: no transpose needed
    inputs = [x, graph.initializer("W", layer.W.data)] + _bias_input(layer, graph)
    return graph.node("Gemm", inputs, alpha=1.0, beta=1.0, transA=0, transB=0)


def _export_pool(op_type):
    def export_pool(layer, graph, x):
        # airi's pools have no padding and round the output size down (ceil_mode=0)
        return graph.node(op_type, [x], kernel_shape=_pair_list(layer.pool_size),
                          strides=_pair_list(layer.stride), pads=[0, 0, 0, 0],
                          ceil_mode=0)
    return export_pool


def _export_global_avg_pool(layer, graph, x):
    pooled = graph.node("GlobalAveragePool", [x])      # (N, C, 1, 1)
    return graph.node("Flatten", [pooled], axis=1)     # (N, C)


def _export_batchnorm(layer, graph, x):
    inputs = [x, graph.initializer("gamma", layer.gamma.data),
              graph.initializer("beta", layer.beta.data),
              graph.initializer("running_mean", layer.running_mean),
              graph.initializer("running_var", layer.running_var)]
    # ONNX's momentum weighs the old estimate (airi's, as PyTorch's, weighs the batch);
    # it plays no part in inference and is written for the record only
    return graph.node("BatchNormalization", inputs, epsilon=float(layer.eps),
                      momentum=1.0 - float(layer.momentum))


def _export_identity(layer, graph, x):
    return graph.node("Identity", [x])


def _export_simple(op_type, **attributes):
    def export_simple(layer, graph, x):
        return graph.node(op_type, [x], **attributes)
    return export_simple


def _export_leaky_relu(layer, graph, x):
    return graph.node("LeakyRelu", [x], alpha=float(layer.alpha))


def _export_sequential(model, graph, x):
    for i, layer in enumerate(model.layers):
        x = graph.layer(layer, x, str(i))
    return x


def _export_residual(layer, graph, x):
    body = graph.layer(layer.body, x, "body")
    shortcut = x if layer.shortcut is None else graph.layer(layer.shortcut, x, "shortcut")
    return graph.node("Add", [body, shortcut])


def _register_builtin():
    from . import layers
    from . import Sequential
    builtin = {
        "Conv2D": _export_conv2d,
        "Linear": _export_linear,
        "MaxPool2D": _export_pool("MaxPool"),
        "AvgPool2D": _export_pool("AveragePool"),
        "GlobalAvgPool2D": _export_global_avg_pool,      # issue 15 (networks)
        "BatchNorm1D": _export_batchnorm,
        "BatchNorm2D": _export_batchnorm,
        "Dropout": _export_identity,                     # evaluation mode: identity
        "Relu": _export_simple("Relu"),
        "LeakyRelu": _export_leaky_relu,
        "Sigmoid": _export_simple("Sigmoid"),
        "Tanh": _export_simple("Tanh"),
        "Flatten": _export_simple("Flatten", axis=1),
        "Softmax": _export_simple("Softmax", axis=1),
        "LogSoftmax": _export_simple("LogSoftmax", axis=1),
        "Residual": _export_residual,                    # issue 15 (networks)
    }
    for name, fn in builtin.items():
        cls = getattr(layers, name, None)
        if cls is not None:       # a layer of a newer airi than this file knows
            register_exporter(cls, fn)
    register_exporter(Sequential, _export_sequential)


_register_builtin()


# ======================================================================= export
def _check_opset(opset, onnx):
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if isinstance(opset, (bool, np.bool_)) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"airi.onnx.export: opset must be an int, got {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"airi.onnx.export: opset must be from {MIN_OPSET} to {newest} "
                         f"(the newest the installed onnx {onnx.__version__} knows), "
                         f"got {opset}")
    return int(opset)


def _check_input_shape(input_shape):
    shape = (input_shape,) if isinstance(input_shape, numbers.Integral) else input_shape
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if not shape or not all(isinstance(d, numbers.Integral)
                            and not isinstance(d, (bool, np.bool_)) and d >= 1
                            for d in shape):
        raise ValueError("airi.onnx.export: input_shape must be one sample's shape "
                         "without the batch axis, positive ints such as (1, 28, 28) or "
                         f"(784,), got {input_shape!r}")
    return tuple(int(d) for d in shape)


def _output_shape(model, input_shape):
    """The model's output shape for one zero sample, computed in evaluation mode on a
    copy (the model's mode, statistics and caches stay as they are)."""
    probe = copy.deepcopy(model)       # pickling rules: caches are not copied
    if callable(getattr(probe, "eval", None)):
        probe.eval()
    x = np.zeros((1,) + input_shape, dtype=np.float32)
    try:
        y = probe.forward(x)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"airi.onnx.export: the model does not accept input_shape "
                         f"{input_shape} (one sample, without the batch axis): "
                         f"{exc}") from exc
    return tuple(np.shape(y))


def _value_info(onnx, name, shape):
    dims = [BATCH_DIM] + [int(d) for d in shape[1:]]
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)


def build(model, input_shape, opset=None, metadata=None):
    """The ONNX ``ModelProto`` that :func:`export` writes, checked, not written."""
    from . import __version__
    onnx = _import_onnx()
    opset = _check_opset(opset, onnx)
    input_shape = _check_input_shape(input_shape)
    output_shape = _output_shape(model, input_shape)

    graph = OnnxGraph(opset)
    y = graph._export(model, INPUT_NAME)
    # the last node writes "output" (an Identity when the model is the identity)
    if graph.nodes and graph.nodes[-1].output[0] == y:
        graph.nodes[-1].output[0] = OUTPUT_NAME
    else:
        graph.nodes.append(onnx.helper.make_node("Identity", [y], [OUTPUT_NAME],
                                                 name=OUTPUT_NAME))
    proto_graph = onnx.helper.make_graph(
        graph.nodes, f"airi.{type(model).__name__}",
        [_value_info(onnx, INPUT_NAME, (1,) + input_shape)],
        [_value_info(onnx, OUTPUT_NAME, output_shape)],
        initializer=graph.initializers)
    opset_ids = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(
        proto_graph, opset_imports=opset_ids, producer_name="airi",
        producer_version=__version__, doc_string=repr(model))
    proto.ir_version = onnx.helper.find_min_ir_version_for(opset_ids)
    props = {"airi_version": __version__,
             "airi_input_shape": ",".join(str(d) for d in input_shape)}
    for key, value in (metadata or {}).items():
        props[str(key)] = str(value)
    onnx.helper.set_model_props(proto, props)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:   # onnx raises ValidationError and InferenceError
        raise OnnxExportError(f"airi.onnx.export: the graph built for "
                              f"{type(model).__name__} does not pass the ONNX checker "
                              f"(an exporter or to_onnx method made a mistake): "
                              f"{exc}") from exc
    return proto


def export(model, path, input_shape, opset=None, *, metadata=None):
    """Write ``model`` in evaluation mode as an ONNX file.

    Parameters
    ----------
    model : Sequential or layer
        Any airi model: a Sequential, a nested model, or a single layer. Its mode,
        parameters, running statistics and caches are left as they are.
    path : str or path-like
        The file to write (replaced atomically: a failed export leaves no broken file).
    input_shape : tuple of int
        One sample's shape without the batch axis: ``(C, H, W)`` or ``(features,)``.
        The graph's input is ``(batch, *input_shape)`` with a dynamic ``batch``.
    opset : int, optional
        The ONNX opset; None means :data:`DEFAULT_OPSET`. From :data:`MIN_OPSET` to the
        newest the installed ``onnx`` knows.
    metadata : dict of str -> str, optional
        Extra ``metadata_props`` entries (e.g. the input normalisation).

    Returns
    -------
    onnx.ModelProto
        The model written (it passed ``onnx.checker.check_model(full_check=True)``).

    Raises
    ------
    ImportError
        The ``onnx`` package is not installed.
    OnnxExportError
        A layer cannot be exported (the message names it and says how to fix it).
    ValueError, TypeError
        A bad ``input_shape`` (or one the model does not accept) or ``opset``.
    """
    proto = build(model, input_shape, opset=opset, metadata=metadata)
    _write_atomically(path, proto.SerializeToString())
    return proto


def _write_atomically(path, data):
    """Write ``data`` to ``path`` as ``airi.save`` writes model files: into a temporary
    ``.NAME.<hex>.tmp`` beside it, flushed to disk, then renamed over ``path`` (through
    a symlink to its target), so a failure leaves any previous file as it was."""
    from .serialization import fileformat
    target = os.fspath(path)
    if os.path.isdir(target):
        raise IsADirectoryError(21, "cannot write the ONNX file: the path is a directory",
                                target)
    real = os.path.realpath(target)
    directory = os.path.dirname(real) or "."
    base = os.path.basename(real)
    fileformat.remove_stale_temp_files(directory, base)
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fileformat._copy_mode(real, tmp)
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fileformat._fsync_directory(directory)
