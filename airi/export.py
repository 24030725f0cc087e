"""``python -m airi.export``: write a saved airi model as an ONNX file.

Examples::

    python -m airi.export runs/20261208-010000/model.pkl lenet.onnx --input-shape 1 28 28
    python -m airi.export model.pkl mlp.onnx --input-shape 784 --opset 13

The model file is read with :func:`airi.load` (safely: it never runs code from the
file). A Trainer checkpoint (``checkpoint.pkl``) is accepted too: its model is
exported, and the input normalisation the training CLI recorded goes into the ONNX
file's metadata. ``main(argv)`` returns the exit status: 0 written, 1 the export failed
(a layer without an ONNX exporter, onnx not installed, the file cannot be written),
2 a usage error (bad arguments, no such file, not a model file, an input shape the
model does not accept).
"""
import argparse
import json
import os
import sys
from pathlib import Path

PROG = "python -m airi.export"


class UsageError(Exception):
    """A mistake of the user: one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def prog_name(argv0=None):
    """``"airi-export"`` for the console script, else ``"python -m airi.export"``."""
    name = os.path.basename(sys.argv[0] if argv0 is None else argv0 or "")
    return "airi-export" if name.startswith("airi-export") else PROG


def build_parser():
    p = _Parser(prog=prog_name(),
                description="Write a saved airi model (model.pkl, or a checkpoint) as an "
                "ONNX file,\nin evaluation mode with a dynamic batch axis.",
                epilog="examples:\n  python -m airi.export runs/RUN/model.pkl lenet.onnx "
                "--input-shape 1 28 28\n  python -m airi.export model.pkl mlp.onnx "
                "--input-shape 784 --opset 13\n\nexit status: 0 written, 1 the export "
                "failed, 2 a usage error",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.pkl", help="a file written by airi.save "
                   "(model.pkl of python -m airi.train, or its checkpoint.pkl)")
    p.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--input-shape", type=int, nargs="+", required=True, metavar="D",
                   help="one sample's shape without the batch axis: C H W for images "
                        "(e.g. 1 28 28), or the number of features (e.g. 784)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default: airi.onnx.DEFAULT_OPSET)")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    return p


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


def _load_model(path):
    """The model in ``path`` and the metadata to record (a checkpoint's normalisation)."""
    from .serialization import load
    if not path.is_file():
        raise UsageError(f"no such file {str(path)!r}")
    try:
        obj = load(path)
    except ValueError as exc:          # ModelFileError, UnsafeModelError
        raise UsageError(_one_line(exc)) from None
    metadata = {}
    if isinstance(obj, dict) and "model" in obj:     # a Trainer checkpoint
        extra = obj.get("extra")
        normalization = extra.get("normalization") if isinstance(extra, dict) else None
        if normalization:
            metadata["airi_normalization"] = json.dumps(normalization)
        obj = obj["model"]
    if not callable(getattr(obj, "forward", None)):
        raise UsageError(f"{path} holds a {type(obj).__name__}, not an airi model")
    return obj, metadata


def _run(argv):
    from . import onnx as airi_onnx
    args = build_parser().parse_args(argv)
    model, metadata = _load_model(Path(args.model))
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"OUT.onnx {str(out)!r} is a directory; name the file to write")
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {str(out)!r}: no directory {str(out.parent)!r}")
    try:
        airi_onnx.export(model, out, tuple(args.input_shape), opset=args.opset,
                         metadata=metadata)
    except airi_onnx.OnnxExportError:
        raise                                           # exit status 1
    except (ValueError, TypeError) as exc:              # input shape, opset
        raise UsageError(_one_line(exc)) from None
    if not args.quiet:
        print(f"wrote {out} ({type(model).__name__}, input (batch, "
              f"{', '.join(str(d) for d in args.input_shape)}))")
    return 0


def main(argv=None):
    """Run the command line; returns the exit status (0 written, 1 export failed,
    2 usage error)."""
    try:
        return _run(argv)
    except UsageError as exc:
        print(f"{prog_name()}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ImportError, OSError, ValueError) as exc:   # OnnxExportError is a ValueError
        print(f"{prog_name()}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
