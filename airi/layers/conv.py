"""``Conv2D``: a 2-D convolution (cross-correlation, as in PyTorch) on NCHW tensors.

The work is done by the backend's im2col / col2im kernels and BLAS, on chunks of a few
samples at a time (``airi._parallel`` runs the chunks on ``airi.get_num_threads()``
threads, each with single-threaded BLAS). For the samples ``n`` of one chunk, whose
columns form one matrix (column ``s*P + p`` = sample s, output pixel p):

forward::

    colsT  = im2col(x[n])             (C*kh*kw, n*Ho*Wo)   in a reused scratch buffer
    prod   = W2 @ colsT               (F, n*Ho*Wo)         W2 = W.reshape(F, C*kh*kw)
    out[n] = prod as (n, F, Ho*Wo) + b                     one transposing copy

backward (the columns are recomputed; only those of small layers, up to 4 MB for the
whole batch, are kept from the forward pass instead)::

    doutT  = dout[n] as (F, n*Ho*Wo)
    dW^T  += colsT @ doutT.T          (C*kh*kw, F)         one GEMM, inner size n*Ho*Wo
    dcolsT = W2.T @ doutT             (C*kh*kw, n*Ho*Wo)   in the columns' scratch buffer
    dx[n]  = col2im(dcolsT)           (n, C, H, W)
    db     = dout.sum((0, 2, 3))      (F,)  once, for the whole batch

One GEMM per chunk instead of one per sample: 10-25% faster in OpenBLAS on these
shapes (single-threaded), and the weight gradient's GEMM gets a long inner dimension
instead of a sum of n short ones. im2col / col2im write and read the (K, n, P) buffer
through a transposed (n, K, P) view (the kernels take any strides).

Why chunks: a chunk's columns (about 1 MB) stay in the L2 cache from im2col to the GEMM
that reads them, and the buffers live across calls, so no step allocates (and page-
faults) the columns of the whole batch, which for the seed CIFAR model's second conv
would be 118 MB; keeping only x for the backward pass also keeps the peak memory of a
training step close to PyTorch's. Recomputing im2col in the backward pass costs much
less than the GEMMs it feeds.

A 1x1 convolution with stride 1 and no padding skips im2col/col2im: its columns are
just ``x.reshape(N, C, H*W)``.

Direct convolution: for few filters on small images (F = 16, 32: the GEMM above is
skinny and runs far below the machine's peak, after im2col has written K*P columns per
sample) the compiled backend has direct kernels, which compute from the (padded) input
with a block of output pixels x 16 filters in vector registers::

    forward  out[n] = conv(x[n], W) + b                W as (C, kh, kw, F)
    dx       dx[n]  = conv(pad(dout[n], k-1-p), flip(W))  W flipped as (F, kh, kw, C)
    dW       dW^T  += correlation of pad(x[n]) with dout[n]   -> (C, kh, kw, F)

``airi._backend.direct_conv_plan`` says, from the shapes, which of the three passes go
direct (float32, stride 1, F % 16 == 0, an AVX2/AVX-512 CPU; measured rule documented
there); the others use im2col + GEMM as above. Results equal to float32 rounding.

Winograd F(2x2, 3x3) (opt-in, ``AIRI_WINOGRAD=1``; ``_backend.winograd_plan``): 3x3,
stride-1 forward and dx passes as input-tile transform -> 16 GEMMs (F, C) @ (C, tiles)
-> output transform (airi/_ext/_wino.pyx), in chunks of samples like the rest.
"""
import numpy as np

from .. import _backend, _parallel
from .._config import resolve_dtype
from .. import init as initializers
from .base import Layer, StateChecker, _positive_int
from .linear import make_weight

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Columns of a whole batch up to this size are kept from forward to backward.
_KEEP_COLS_BYTES = 4 << 20


def _tile_buffer(worker, slot, rows, cols, dtype):
    """A (16, rows, cols) Winograd scratch array whose 16 matrices lie 64 bytes more
    than rows*cols apart: with the sizes here that product is often a power of two,
    and 16 streams exactly 2^k bytes apart share one set of the L1 cache (the
    transforms ran 2-3x slower)."""
    step = rows * cols + 64 // np.dtype(dtype).itemsize
    buf = _parallel.workspace(worker, slot, (16, step), dtype)
    return buf[:, :rows * cols].reshape(16, rows, cols)


def check_kernel_dtype(layer, x):
    """The compiled kernels take float32 or float64 (not float16)."""
    if x.dtype not in _KERNEL_DTYPES:
        raise ValueError(f"{layer._name()}: input must be float32 or float64, got dtype "
                         f"{x.dtype} (convert it, e.g. x.astype(np.float32))")

__all__ = ["Conv2D"]


class Conv2D(Layer):
    """2-D convolution layer (NCHW, cross-correlation).

    Parameters
    ----------
    in_channels : int
        C, the channels of the input.
    num_filters : int
        F, the number of filters (output channels).
    filter_size : int or (int, int)
        Kernel size k or (kh, kw).
    stride : int or (int, int)
    pad : int or (int, int)
        Zero padding added on both sides of each spatial axis.
    bias : bool
        Learn a bias per filter (zeros at start).
    dtype : dtype, optional
        Parameter dtype; None means the default (float32).
    init : str or callable
        ``"kaiming"`` (He normal, fan_in = C*kh*kw; default), ``"xavier"``, ...

    Attributes
    ----------
    W : Parameter, shape (F, C, kh, kw)
    b : Parameter, shape (F,) (absent when ``bias=False``)
    x : ndarray or None
        The input of the last training-mode forward pass (for backward).
    cols : ndarray (N, C*kh*kw, Ho*Wo) or None
        Its columns, kept only when they are small (else backward recomputes them).

    Shapes
    ------
    forward: x (N, C, H, W) -> out (N, F, Ho, Wo) with
    ``Ho = (H + 2*ph - kh) // sh + 1``, ``Wo = (W + 2*pw - kw) // sw + 1``;
    backward: dout (N, F, Ho, Wo) -> dx (N, C, H, W).
    """

    _cache_names = ("x", "cols")

    def __init__(self, in_channels, num_filters, filter_size, stride=1, pad=0, bias=True,
                 dtype=None, init="kaiming"):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels", "Conv2D")
        self.num_filters = _positive_int(num_filters, "num_filters", "Conv2D")
        self.filter_size = _backend.pair(filter_size, "Conv2D filter_size")
        self.stride = _backend.pair(stride, "Conv2D stride")
        self.pad = _backend.pair(pad, "Conv2D pad")
        if min(self.filter_size) < 1 or min(self.stride) < 1 or min(self.pad) < 0:
            raise ValueError(f"Conv2D: need filter_size >= 1, stride >= 1 and pad >= 0, got "
                             f"filter_size={self.filter_size}, stride={self.stride}, "
                             f"pad={self.pad}")
        self.bias = bool(bias)
        dtype = resolve_dtype(dtype)
        shape = (self.num_filters, self.in_channels) + self.filter_size
        self.add_param("W", make_weight(shape, init, dtype))
        if self.bias:
            self.add_param("b", initializers.zeros((self.num_filters,), dtype=dtype))
        self.x = None
        self.cols = None

    def check_state(self):
        """The checks of the constructor, on attributes read from a model file."""
        check = StateChecker(self)
        check.boolean("training")
        C, F = check.positive_int("in_channels"), check.positive_int("num_filters")
        kernel = check.int_pair("filter_size", 1)
        check.int_pair("stride", 1)
        check.int_pair("pad", 0)
        shapes = {"W": (F, C) + kernel}
        if check.boolean("bias"):
            shapes["b"] = (F,)
        check.params(shapes, ("num_filters", "in_channels", "filter_size"))

    # ----------------------------------------------------------------- helpers
    def output_shape(self, x_shape):
        """The output shape (N, F, Ho, Wo) for an input of shape (N, C, H, W)."""
        N, _, H, W = x_shape
        try:
            Ho, Wo = _backend.conv_output_shape(H, W, self.filter_size, self.stride,
                                                self.pad)
        except ValueError as exc:
            raise ValueError(f"Conv2D: input of shape {tuple(x_shape)} does not fit the "
                             f"filter: {exc}") from None
        return N, self.num_filters, Ho, Wo

    def _is_pointwise(self):
        """1x1 kernel, stride 1, no padding: the columns are the input itself."""
        return self.filter_size == (1, 1) and self.stride == (1, 1) and self.pad == (0, 0)

    def _chunk(self, N, K, P, itemsize):
        """Samples per chunk, so that a chunk's columns (n, K, P) fit the backend's budget."""
        return _backend.chunk_size(N, K * P * itemsize)

    def _columns(self, x, worker, K, P, keep=None):
        """x (n, C, H, W) -> the chunk's columns as one matrix colsT (K, n*P): column
        ``s*P + p`` holds sample s's window p. Written into ``keep`` (K, n, P) (a slice
        of the whole batch's kept columns) when given, else into ``worker``'s scratch
        buffer. Not for pointwise convolutions (their columns are x itself)."""
        n = x.shape[0]
        cols = keep if keep is not None else \
            _parallel.workspace(worker, "cols", (K, n, P), x.dtype)
        # im2col writes (n, K, P) through a transposed view: the same kernel, strides
        # of the (K, n, P) buffer
        _backend.im2col_into(x, cols.transpose(1, 0, 2), self.filter_size, self.stride,
                             self.pad)
        return cols.reshape(K, n * P)

    def _plan(self, x, *arrays):
        """(forward, dx, dW): which passes use the direct convolution instead of im2col +
        GEMM for input x (and the other ``arrays`` of the call, e.g. dout: the direct
        kernels need every operand in float32); ``_backend.direct_conv_plan`` decides."""
        if self._is_pointwise():
            return False, False, False
        _, C, H, W = x.shape
        dtype = np.result_type(x.dtype, self.W.data.dtype, *(a.dtype for a in arrays))
        return _backend.direct_conv_plan(dtype, C, self.num_filters, self.filter_size,
                                         self.stride, self.pad, H, W)

    def _winograd(self, x, *arrays):
        """(forward, dx): which passes use Winograd F(2x2, 3x3) (where the direct
        convolution does not run them); ``_backend.winograd_plan`` decides."""
        if self._is_pointwise():
            return False, False
        dtype = np.result_type(x.dtype, self.W.data.dtype, *(a.dtype for a in arrays))
        return _backend.winograd_plan(dtype, x.shape[1], self.num_filters,
                                      self.filter_size, self.stride, self.pad)

    @staticmethod
    def _winograd_chunk(N, bytes_per_sample):
        """Samples per Winograd chunk: tiles of ~4 MB (V and M of one chunk; larger
        GEMMs than im2col's 2 MB columns), and at least two chunks per thread."""
        workers = _parallel.workers_available()
        return max(1, min(-(-N // (2 * workers)), (4 << 20) // max(1, bytes_per_sample)))

    def _winograd_conv(self, x, U, bias, out, pad):
        """out (N, F', Ho, Wo) = 3x3 stride-1 convolution of x (N, C', H, W) whose
        filters are given transformed, U (16, F', C') (``winograd_filters``), + bias."""
        N, Cin, _, _ = x.shape
        Fout, Ho, Wo = out.shape[1:]
        th, tw = _backend.winograd_tiles(Ho, Wo)
        T = th * tw
        chunk = self._winograd_chunk(N, 16 * (Cin + Fout) * T * x.dtype.itemsize)

        def chunk_conv(worker, start, stop):
            n = stop - start
            V = _tile_buffer(worker, "wino_V", Cin, n * T, x.dtype)
            M = _tile_buffer(worker, "wino_M", Fout, n * T, out.dtype)
            _backend.winograd_input_into(x[start:stop], V, pad)
            np.matmul(U, V, out=M)          # 16 GEMMs (F', C') @ (C', n*T)
            _backend.winograd_output_into(M, out[start:stop], bias)

        _parallel.run(chunk_conv, N, chunk)

    def _padded_size(self, C, H, W, pad=None):
        """Elements of one zero-padded sample (C, H+2ph, W+2pw)."""
        ph, pw = self.pad if pad is None else pad
        return C * (H + 2 * ph) * (W + 2 * pw)

    @staticmethod
    def _direct_chunk(N, out_per_sample):
        """Samples per chunk of the direct kernels: a few chunks per thread, so the
        threads balance, each at least ~64 kB of output."""
        workers = _parallel.workers_available()
        per_thread = max(1, -(-N // (4 * workers)))
        return max(per_thread, min(N, (16 << 10) // max(1, out_per_sample)))

    # ---------------------------------------------------------- forward/back
    def forward(self, x, training=None):
        """x (N, C, H, W) -> out (N, F, Ho, Wo). Keeps x (not the columns) when
        training."""
        x = self._check_input(x, ndim=4, dims={1: self.in_channels})
        check_kernel_dtype(self, x)
        N, F, Ho, Wo = self.output_shape(x.shape)
        x = np.ascontiguousarray(x)                      # free when already contiguous
        W2 = self.W.data.reshape(F, -1)                  # (F, K)
        K, P = W2.shape[1], Ho * Wo
        out = np.empty((N, F, P), dtype=np.result_type(x.dtype, W2.dtype))
        b = self.b.data[:, None] if self.bias else None  # (F, 1)
        training = self._is_training(training)
        # Small columns are kept for the backward pass (saves recomputing them); big
        # ones would cost more memory than the recomputation costs time.
        direct = self._plan(x)[0]
        winograd = not direct and self._winograd(x)[0]
        keep = None
        if training and not direct and not winograd and not self._is_pointwise() and \
                N * K * P * x.dtype.itemsize <= _KEEP_COLS_BYTES:
            keep = np.empty((K, N, P), dtype=x.dtype)

        if direct:
            wt = np.ascontiguousarray(self.W.data.transpose(1, 2, 3, 0))  # (C, kh, kw, F)
            bias = self.b.data if self.bias else None
            out4 = out.reshape(N, F, Ho, Wo)
            padded = self._padded_size(x.shape[1], x.shape[2], x.shape[3])

            def forward_chunk(worker, start, stop):
                scratch = _parallel.workspace(worker, "pad", (padded,), x.dtype)
                _backend.direct_conv_into(x[start:stop], wt, bias, out4[start:stop],
                                          self.pad, scratch)

            _parallel.run(forward_chunk, N, self._direct_chunk(N, F * P))
            self.x = x if training else None
            self.cols = None
            return out4

        if winograd:
            out4 = out.reshape(N, F, Ho, Wo)
            self._winograd_conv(x, _backend.winograd_filters(self.W.data),
                                self.b.data if self.bias else None, out4, self.pad)
            self.x = x if training else None
            self.cols = None
            return out4

        def forward_chunk(worker, start, stop):
            chunk_out = out[start:stop]
            if self._is_pointwise():                     # (F, C) @ (n, C, P) -> (n, F, P)
                np.matmul(W2, x[start:stop].reshape(-1, K, P), out=chunk_out)
                if b is not None:
                    chunk_out += b
                return
            n = stop - start
            colsT = self._columns(x[start:stop], worker, K, P,
                                  None if keep is None else keep[:, start:stop])
            # one GEMM for the chunk, (F, K) @ (K, n*P): 10-25% faster than n GEMMs of
            # (F, K) @ (K, P) (measured, 1-thread OpenBLAS); then to NCHW with the bias
            prod = _parallel.workspace(worker, "prod", (F, n, P), out.dtype)
            np.matmul(W2, colsT, out=prod.reshape(F, n * P))
            if b is not None:
                np.add(prod.transpose(1, 0, 2), b, out=chunk_out)
            else:
                np.copyto(chunk_out, prod.transpose(1, 0, 2))

        _parallel.run(forward_chunk, N, self._chunk(N, K, P, x.dtype.itemsize))
        self.x = x if training else None
        self.cols = keep
        return out.reshape(N, F, Ho, Wo)

    def backward(self, dout):
        """dout (N, F, Ho, Wo) -> dx (N, C, H, W); sets W.grad (F, C, kh, kw) and
        b.grad (F,)."""
        return self._backward(dout, input_grad=True)

    def backward_params(self, dout):
        """dout (N, F, Ho, Wo) -> None; sets W.grad and b.grad without computing dx
        (the first layer of a network: its input is data)."""
        self._backward(dout, input_grad=False)

    def _backward(self, dout, input_grad):
        x = self._cached("x")
        kept = self.cols
        dout = self._check_dout(dout, self.output_shape(x.shape))
        N, F = dout.shape[:2]
        dout2 = np.ascontiguousarray(dout).reshape(N, F, -1)   # (N, F, P)
        W2 = self.W.data.reshape(F, -1)                         # (F, K)
        K, P = W2.shape[1], dout2.shape[2]
        W2T = W2.T
        dx = np.empty(x.shape, dtype=np.result_type(W2.dtype, dout2.dtype)) \
            if input_grad else None
        dW_dtype = np.result_type(dout2.dtype, x.dtype)
        _, direct_dx, direct_dw = self._plan(x, dout2)
        direct_dx = direct_dx and input_grad
        winograd_dx = input_grad and not direct_dx and self._winograd(x, dout2)[1]
        (kh, kw), (ph, pw) = self.filter_size, self.pad
        C, H, Wd = x.shape[1:]
        Ho, Wo = dout.shape[2:]
        if direct_dx:
            # dx = full correlation of dout with the flipped filters: a direct
            # convolution with C "filters", padding (k-1-p)
            wflip = np.ascontiguousarray(W2.reshape(F, C, kh, kw)[:, :, ::-1, ::-1]
                                         .transpose(0, 2, 3, 1))      # (F, kh, kw, C)
            dx_pad = (kh - 1 - ph, kw - 1 - pw)
            dx_scratch = self._padded_size(F, Ho, Wo, dx_pad)
        Hp, Wp = H + 2 * ph, Wd + 2 * pw
        if direct_dw and (direct_dx or not input_grad):   # no columns: chunks of padded
            chunk = _backend.chunk_size(N, (C * Hp * Wp + 2 * F * P) * x.dtype.itemsize)
        else:                                               # input + dout
            chunk = self._chunk(N, K, P, x.dtype.itemsize if dx is None else
                                max(x.dtype.itemsize, dx.dtype.itemsize))
        # One weight-gradient slot per chunk, summed in chunk order at the end: the
        # result does not depend on which thread ran which chunk (bit-reproducible runs).
        n_chunks = -(-N // chunk)
        if direct_dw:   # dW^T (C, kh, kw, F), accumulated by the direct kernel
            dWt_parts = np.zeros((n_chunks, C, kh, kw, F), dtype=dW_dtype)
        else:           # dW^T (K, F)
            dWT_parts = np.empty((n_chunks, K, F), dtype=dW_dtype)
        pointwise = self._is_pointwise()

        def weight_grad_direct(worker, start, stop):
            n = stop - start
            if ph or pw:
                xp = _parallel.workspace(worker, "xpad", (n, C, Hp, Wp), x.dtype)
                xp[...] = 0
                xp[:, :, ph:ph + H, pw:pw + Wd] = x[start:stop]
            else:
                xp = x[start:stop]
            dT = _parallel.workspace(worker, "doutT", (n, Ho, Wo, F), dout2.dtype)
            np.copyto(dT, dout2[start:stop].reshape(n, F, Ho, Wo).transpose(0, 2, 3, 1))
            _backend.direct_conv_dw_into(xp, dT, dWt_parts[start // chunk])

        def backward_chunk(worker, start, stop):
            n = stop - start
            d = dout2[start:stop]                                # (n, F, P)
            if pointwise:
                per_sample = _parallel.workspace(worker, "dWT", (n, K, F), dW_dtype)
                np.matmul(x[start:stop].reshape(n, K, P), d.transpose(0, 2, 1),
                          out=per_sample)                        # (n, K, F)
                per_sample.sum(axis=0, out=dWT_parts[start // chunk])
                if input_grad:   # dx is the columns' shape: write it directly
                    np.matmul(W2T, d, out=dx[start:stop].reshape(n, K, P))
                return
            if direct_dw:
                weight_grad_direct(worker, start, stop)
            if not direct_dw or (input_grad and not direct_dx and not winograd_dx):
                # dout of the chunk as one matrix (F, n*P), the columns' order
                dT = _parallel.workspace(worker, "dout_rows", (F, n, P), dout2.dtype)
                np.copyto(dT, d.transpose(1, 0, 2))
                dT2 = dT.reshape(F, n * P)
            if not direct_dw:
                # one GEMM with a long inner dimension (n*P) instead of n short ones
                if kept is not None:
                    colsT = kept[:, start:stop].reshape(K, n * P)
                else:
                    colsT = self._columns(x[start:stop], worker, K, P)
                np.matmul(colsT, dT2.T, out=dWT_parts[start // chunk])   # (K, F)
            if not input_grad or winograd_dx:
                return
            if direct_dx:
                scratch = _parallel.workspace(worker, "pad", (dx_scratch,), dx.dtype)
                _backend.direct_conv_into(d.reshape(n, F, Ho, Wo), wflip, None,
                                          dx[start:stop], dx_pad, scratch)
                return
            # dcolsT (K, n*P) goes to the scratch buffer (the columns are used up; kept
            # columns stay intact, so backward may run again)
            dcols = _parallel.workspace(worker, "cols", (K, n, P), dx.dtype)
            np.matmul(W2T, dT2, out=dcols.reshape(K, n * P))
            _backend.col2im_into(dcols.transpose(1, 0, 2), dx[start:stop],
                                 self.filter_size, self.stride, self.pad)

        _parallel.run(backward_chunk, N, chunk)
        if winograd_dx:
            # dx = full correlation of dout with the flipped filters (C "filters" of F
            # channels), padding 2 - p, as Winograd tiles
            wflip = W2.reshape(F, C, kh, kw)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
            self._winograd_conv(dout2.reshape(N, F, Ho, Wo),
                                _backend.winograd_filters(wflip), None, dx,
                                (kh - 1 - ph, kw - 1 - pw))
        if direct_dw:
            self.W.set_grad(np.ascontiguousarray(dWt_parts.sum(axis=0).transpose(3, 0, 1, 2)))
        else:
            self.W.set_grad(dWT_parts.sum(axis=0).T)
        if self.bias:
            self.b.set_grad(dout2.sum(axis=(0, 2)))
        return dx

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, num_filters={self.num_filters}, "
                f"filter_size={self.filter_size}, stride={self.stride}, pad={self.pad}, "
                f"bias={self.bias}")
