"""Operator norms of convolutions and pooling layers at any input size, without a dense matrix.

Every value here is an upper bound on an operator norm of one layer's map on
a single sample, flattened (L2 → L2, or L∞ → L∞ where named so):

* a zero-padded, strided 2-D convolution: it is a crop of a *circular*
  convolution of the zero-padded input on a grid of size ``N ≥ n + 2p``
  (nothing wraps around), so its L2 norm is at most that of the circular one.
  With stride ``s`` and ``N`` a multiple of ``s``, the strided circular
  convolution splits into ``s_h·s_w`` polyphase components of the input and
  is block-diagonal in the Fourier basis: its norm is exactly the largest
  ``σ_max`` over frequencies of the ``(c_out, c_in·s_h·s_w)`` matrices of
  the kernel's FFT (Sedghi, Gupta and Long, ICLR 2019; for stride 1 this is
  their formula). Computed in float64 by SVD with a small relative slack.
* pooling: max pooling is ``√m`` in L2 (``m``: the most windows holding one
  input element) and 1 in L∞; average pooling is a non-negative linear map
  ``A`` whose L2 norm is at most ``√(||A||_1 ||A||_∞)`` (Schur's test), the
  column and row sums computed exactly from the layer itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

SLACK = 1e-12
"""Relative slack added to float64 SVD results so rounding cannot push a bound below the truth."""


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[-1])) if len(v) == 2 else (int(v[0]), int(v[0]))


def conv_padding(conv: nn.Conv1d | nn.Conv2d, in_hw: tuple[int, int]) -> tuple[int, int] | None:
    """Total zero padding ``(p_h, p_w)`` (both sides together) of ``conv``, or None for an unsupported padding."""
    if conv.padding_mode != "zeros":
        return None
    k = conv.kernel_size if isinstance(conv, nn.Conv2d) else (1, conv.kernel_size[0])
    d = conv.dilation if isinstance(conv, nn.Conv2d) else (1, conv.dilation[0])
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        # 'same' (stride 1): total padding dilation·(kernel − 1) per dimension
        return (d[0] * (k[0] - 1), d[1] * (k[1] - 1))
    p = conv.padding if isinstance(conv, nn.Conv2d) else (0, conv.padding[0])
    return (2 * int(p[0]), 2 * int(p[1]))


def conv2d_l2_bound(weight: torch.Tensor, in_hw: tuple[int, int], *, stride: tuple[int, int] = (1, 1),
                    pad_total: tuple[int, int] = (0, 0), dilation: tuple[int, int] = (1, 1), groups: int = 1) -> float:
    """An upper bound on the L2 operator norm of a zero-padded 2-D convolution on ``(c_in, H, W)`` inputs.

    ``weight``: ``(c_out, c_in/groups, k_h, k_w)``; ``in_hw``: the input's ``(H, W)``; ``pad_total``: the
    zero padding of both sides together per dimension. The bias does not matter (a constant shift). Exact for
    the circular convolution on the padded grid (see the module docstring), so at least the true norm.
    """
    w = weight.detach().double().cpu()
    c_out, cin_g, kh, kw = w.shape
    sh, sw = stride
    dh, dw = dilation
    if dh > 1 or dw > 1:  # the dilated kernel, zeros between the taps
        wd = torch.zeros(c_out, cin_g, (kh - 1) * dh + 1, (kw - 1) * dw + 1, dtype=torch.float64)
        wd[:, :, ::dh, ::dw] = w
        w = wd
        kh, kw = w.shape[2:]
    nh = max(in_hw[0] + pad_total[0], kh)
    nw = max(in_hw[1] + pad_total[1], kw)
    mh, mw = -(-nh // sh), -(-nw // sw)  # polyphase grid: N = s·M ≥ n + 2p
    # polyphase kernel: w_r[q] = w[s·q + r], phases r stacked with the input channels
    kq_h, kq_w = -(-kh // sh), -(-kw // sw)
    wp = torch.zeros(c_out, cin_g, kq_h * sh, kq_w * sw, dtype=torch.float64)
    wp[:, :, :kh, :kw] = w
    wp = wp.view(c_out, cin_g, kq_h, sh, kq_w, sw).permute(0, 1, 3, 5, 2, 4).reshape(c_out, cin_g * sh * sw, kq_h, kq_w)
    if kq_h > mh or kq_w > mw:  # cannot happen for a layer whose output is non-empty; stay sound regardless
        mh, mw = max(mh, kq_h), max(mw, kq_w)
    g_out = c_out // groups
    best = 0.0
    for g in range(groups):
        block = wp[g * g_out:(g + 1) * g_out]
        spec = torch.fft.rfft2(block, s=(mh, mw))  # (g_out, cin_g·P, mh, mw//2+1): conjugate frequencies skipped
        mats = spec.permute(2, 3, 0, 1).reshape(-1, block.shape[0], block.shape[1])
        for chunk in torch.split(mats, 4096):
            best = max(best, float(torch.linalg.matrix_norm(chunk, ord=2).max()))
    return best * (1 + SLACK)


def conv_linf_bound(weight: torch.Tensor) -> float:
    """An upper bound on the L∞ operator norm of a zero-padded convolution: the largest absolute kernel sum of
    one output channel (zero padding and borders only drop terms)."""
    w = weight.detach().double().cpu()
    return float(w.abs().flatten(1).sum(dim=1).max()) * (1 + SLACK) if w.numel() else 0.0


def windows_per_element(n: int, n_out: int, k: int, s: int, p: int, d: int = 1) -> int:
    """The most windows of a 1-D pooling (output size ``n_out``, kernel ``k``, stride ``s``, padding ``p``,
    dilation ``d``) that hold one input element of the ``n`` real ones; windows placed as PyTorch places them
    (window ``i`` covers ``i·s − p + j·d``, ``j < k``; ``ceil_mode`` only adds windows, counted here)."""
    counts = torch.zeros(n, dtype=torch.long)
    for i in range(n_out):
        idx = torch.arange(k) * d + i * s - p
        idx = idx[(idx >= 0) & (idx < n)]
        counts[idx] += 1
    return int(counts.max()) if n else 0


def adaptive_windows_per_element(n: int, n_out: int) -> int:
    """As :func:`windows_per_element` for adaptive pooling: window ``i`` is ``[⌊i·n/o⌋, ⌈(i+1)·n/o⌉)``."""
    counts = torch.zeros(n, dtype=torch.long)
    for i in range(n_out):
        counts[(i * n) // n_out: -(-((i + 1) * n) // n_out)] += 1
    return int(counts.max()) if n else 0


def maxpool_multiplicity(pool: nn.Module, in_spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> int:
    """``m`` of a max pooling layer (1-D or 2-D, fixed or adaptive): the most windows holding one input element.

    Its L2 constant is ``√m``: ``Σ_w max_{p∈w} δ_p² ≤ Σ_p (windows holding p)·δ_p²``. Padding (−∞) adds nothing.
    """
    m = 1
    dims = len(in_spatial)
    if isinstance(pool, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        for n, o in zip(in_spatial, out_spatial):
            m *= adaptive_windows_per_element(n, o)
        return m
    assert isinstance(pool, (nn.MaxPool1d, nn.MaxPool2d))
    k, s, p, d = (_pair(v) if dims == 2 else (int(v if isinstance(v, int) else v[0]),)
                  for v in (pool.kernel_size, pool.stride or pool.kernel_size, pool.padding, pool.dilation))
    for i in range(dims):
        m *= windows_per_element(in_spatial[i], out_spatial[i], k[i], s[i], p[i], d[i])
    return m


def avgpool_norms(pool: nn.Module, in_spatial: tuple[int, ...]) -> tuple[float, float]:
    """``(L2 bound, L∞ norm)`` of an average pooling layer (1-D or 2-D, fixed or adaptive) on one channel of
    size ``in_spatial``: the map is ``A ≥ 0`` elementwise, so ``||A||_∞`` is the largest row sum (the pool of
    ones) and ``||A||_1`` the largest column sum (the gradient of the pooled ones' sum), and
    ``||A||_2 ≤ √(||A||_1·||A||_∞)``. Covers ``count_include_pad``, ``ceil_mode`` and ``divisor_override``."""
    with torch.enable_grad():
        ones = torch.ones((1, 1, *in_spatial), dtype=torch.float64, requires_grad=True)
        out = pool(ones)
        (col,) = torch.autograd.grad(out.sum(), ones)
    row_max = float(out.detach().max()) if out.numel() else 0.0
    col_max = float(col.max()) if col.numel() else 0.0
    return math.sqrt(row_max * col_max) * (1 + SLACK), row_max * (1 + SLACK)


def conv_module_bounds(conv: nn.Conv1d | nn.Conv2d, in_shape: tuple[int, ...],
                       weight: torch.Tensor | None = None) -> tuple[float, float] | None:
    """``(L2, L∞)`` bounds of ``conv`` on per-sample inputs ``in_shape`` (``(C, L)`` or ``(C, H, W)``), with
    ``weight`` in place of its own (e.g. a folded BatchNorm); None for a padding mode other than zeros."""
    w = conv.weight if weight is None else weight
    if isinstance(conv, nn.Conv1d):
        w = w.unsqueeze(2)
        hw = (1, in_shape[-1])
        stride, dilation = (1, conv.stride[0]), (1, conv.dilation[0])
    else:
        hw = (in_shape[-2], in_shape[-1])
        stride, dilation = _pair(conv.stride), _pair(conv.dilation)
    pad = conv_padding(conv, hw)
    if pad is None:
        return None
    l2 = conv2d_l2_bound(w, hw, stride=stride, pad_total=pad, dilation=dilation, groups=conv.groups)
    return l2, conv_linf_bound(w)


def dense_conv_l2(conv: nn.Conv2d, in_shape: tuple[int, int, int], weight: torch.Tensor | None = None,
                  *, max_entries: int = 4_000_000) -> float | None:
    """``σ_max`` of the dense matrix of ``conv`` at ``in_shape`` by float64 SVD, with a relative slack (the exact
    operator, often tighter than the circular bound at small sizes), or None beyond ``max_entries`` entries."""
    if conv.padding_mode != "zeros":
        return None
    w = (conv.weight if weight is None else weight).detach().double().cpu()
    d_in = math.prod(in_shape)
    with torch.no_grad():
        out_shape = F.conv2d(torch.zeros((1, *in_shape), dtype=torch.float64), w, stride=conv.stride,
                             padding=conv.padding, dilation=conv.dilation, groups=conv.groups).shape[1:]
    if d_in * math.prod(out_shape) > max_entries:
        return None
    with torch.no_grad():
        basis = torch.eye(d_in, dtype=torch.float64).view(d_in, *in_shape)
        cols = F.conv2d(basis, w, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                        groups=conv.groups)
    M = cols.flatten(1)
    if M.shape[0] > M.shape[1]:
        M = M.T
    return float(torch.linalg.matrix_norm(M, ord=2)) * (1 + SLACK)
