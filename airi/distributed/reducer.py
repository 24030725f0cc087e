"""The gradient reducer: every Parameter.grad averaged across ranks, weighted by each
rank's number of samples, packed into buckets of contiguous memory."""

import numpy as np


from .collectives import DEFAULT_BUCKET_BYTES, _as_params, _buckets, allreduce_inplace, wait  # noqa: F401 (DEFAULT_BUCKET_BYTES: public here too)
from .startup import _world, init, size




# ------------------------------------------------------------------ gradients
class _Bucket:
    """One contiguous buffer holding the (weighted) gradients of a few parameters,
    plus one slot for the weight, so that the summed weight arrives with the sums."""

    def __init__(self, dtype, params):
        self.dtype = np.dtype(dtype)
        self.params = params
        self.offsets = np.cumsum([0] + [p.size for p in params])
        # float64 weight slot even for float32 gradients would need a second buffer;
        # the weight is a sample count (exact in float32 up to 2**24).
        self.buffer = np.empty(int(self.offsets[-1]) + 1, dtype=self.dtype)
        self.request = None

    def pack(self, weight):
        """Copy ``weight * grad`` of every parameter into the buffer."""
        buf = self.buffer
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            view = buf[lo:hi]
            if p.grad is None:
                view.fill(0)
            elif weight == 1.0:
                view[...] = p.grad.reshape(-1)
            else:
                np.multiply(p.grad.reshape(-1), weight, out=view)
        buf[-1] = weight

    def unpack(self):
        """Divide the sums by the summed weight and store them as the gradients."""
        buf = self.buffer
        total = buf[-1]
        scale = 1.0 / total if total > 0 else 0.0
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            view = buf[lo:hi].reshape(p.shape)
            g = p.grad
            if g is not None and g.flags.writeable and g.flags.c_contiguous \
                    and g.dtype == self.dtype and g.shape == p.shape:
                np.multiply(view, scale, out=g)
            else:
                p.grad = (view * scale).astype(self.dtype, copy=False)


class GradientReducer:
    """Averages the gradients of a fixed list of parameters across the ranks.

    The gradients are packed into a few contiguous buffers (buckets of about
    ``bucket_bytes``, one dtype each, filled from the *last* parameter backwards:
    back-propagation produces those first) and each bucket is summed with one
    ``Allreduce``. Every bucket also carries this rank's weight (its sample count), so
    the weighted mean needs no extra message.

    Parameters
    ----------
    params : iterable of Parameter
    comm : mpi4py communicator, optional
        Default: airi's (see :func:`world`).
    bucket_bytes : int

    Notes
    -----
    Non-blocking use (:meth:`backward`): while back-propagation walks the layers from
    the last to the first, each bucket's ``Iallreduce`` starts as soon as the layers
    owning its parameters are done, overlapping communication with the remaining
    backward work. Measured on one 2-core machine it does not pay (0.9-1.0x of the
    blocking :meth:`reduce`: little to hide, and Open MPI's non-blocking collectives
    only progress inside MPI calls), so the Trainer uses :meth:`reduce`; see
    ``benchmarks/README.md``.
    """

    def __init__(self, params, comm=None, bucket_bytes=DEFAULT_BUCKET_BYTES):
        init()
        self.comm = comm if comm is not None else _world.comm
        self.params = _as_params(params)
        self.bucket_bytes = int(bucket_bytes)
        order = self.params[::-1]
        self.buckets = [_Bucket(dtype, [order[i] for i in positions])
                        for dtype, positions in _buckets(
                            [(p.dtype, p.size) for p in order], self.bucket_bytes)]
        self.key = _params_key(self.params)
        self.reduce_seconds = 0.0   # time spent inside the reduction calls (last step)

    def reduce(self, weight=1.0):
        """Average every ``Parameter.grad`` in place: ``sum_r w_r g_r / sum_r w_r``.

        Parameters
        ----------
        weight : float
            This rank's weight: its number of samples in the step (so the result is
            the mean over the global batch), or 1 for a plain mean.
        """
        import time
        MPI = _world.MPI
        start = time.perf_counter()
        for b in self.buckets:
            b.pack(float(weight))
            if self.comm is not None:
                allreduce_inplace(b.buffer, MPI.SUM, "allreduce of the gradients",
                                  comm=self.comm)
            b.unpack()
        self.reduce_seconds = time.perf_counter() - start

    # --- non-blocking: overlap the reduction with back-propagation -------------------
    def backward(self, model, dout, weight=1.0):
        """``model.backward(dout)`` layer by layer, starting each bucket's
        ``Iallreduce`` as soon as its gradients exist; then wait and average.

        Parameters
        ----------
        model : Sequential
        dout : ndarray
            dL/d(output) of the model.
        weight : float
            As for :meth:`reduce`.

        Returns
        -------
        ndarray
            dL/dx of the model's input.
        """
        import time
        MPI = _world.MPI
        owner = {}
        for layer in model.layers:
            for p in _as_params(layer.parameters() if hasattr(layer, "parameters")
                                else []):
                owner.setdefault(id(p), layer)
        waiting = [{id(owner.get(id(p))) for p in b.params} for b in self.buckets]
        started, pending = [False] * len(self.buckets), []
        comm_seconds = 0.0
        for layer in reversed(model.layers):
            dout = layer.backward(dout)
            t = time.perf_counter()
            for i, b in enumerate(self.buckets):
                if started[i]:
                    continue
                waiting[i].discard(id(layer))
                if not waiting[i]:
                    b.pack(float(weight))
                    b.request = self.comm.Iallreduce(MPI.IN_PLACE, b.buffer, op=MPI.SUM)
                    started[i] = True
                    pending.append(b.request)
            if pending:
                MPI.Request.Testall(pending)   # lets MPI move data along
            comm_seconds += time.perf_counter() - t
        t = time.perf_counter()
        for i, b in enumerate(self.buckets):
            if not started[i]:    # parameters outside model.layers (unusual)
                b.pack(float(weight))
                b.request = self.comm.Iallreduce(MPI.IN_PLACE, b.buffer, op=MPI.SUM)
                pending.append(b.request)
        wait(pending, "allreduce of the gradients")
        for b in self.buckets:
            b.unpack()
            b.request = None
        self.reduce_seconds = comm_seconds + time.perf_counter() - t
        return dout


def _params_key(params):
    return tuple((id(p), p.dtype.str, p.shape) for p in params)


_reducers = {}


def allreduce_gradients(params, count=None):
    """Average every ``Parameter.grad`` across the ranks, in place.

    Parameters
    ----------
    params : model, dict or iterable of Parameter
        Every rank must pass the same parameters in the same order. A missing gradient
        (None) counts as zeros.
    count : int, optional
        This rank's number of samples in the step (its shard of the global batch). The
        result is then ``sum_r (n_r / n) * grad_r``: with each rank's loss the mean over
        its own samples, exactly the gradient of the mean loss over the global batch,
        also when the shards differ in size. None: a plain mean over the ranks.

    Returns
    -------
    None
        Every ``Parameter.grad`` holds the average (unchanged without MPI).
    """
    if size() == 1:
        return
    plist = _as_params(params)
    key = _params_key(plist)
    reducer = _reducers.get(key)
    if reducer is None:
        if len(_reducers) > 8:       # models come and go (tests): keep a few
            _reducers.clear()
        reducer = _reducers[key] = GradientReducer(plist)
    reducer.reduce(1.0 if count is None else float(count))
