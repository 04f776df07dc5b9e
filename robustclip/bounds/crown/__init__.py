"""CROWN for convolutional and residual networks, on the model's traced graph.

:func:`build_plan` reads a model (``torch.fx``) into float64 operations: convolutions (as operators, never dense
matrices), linear layers, BatchNorm folded into the conv/linear layer before it (else a per-channel affine map),
average pooling, max pooling, residual sums, ReLU/LeakyReLU/sigmoid/tanh and MinMax/GroupSort pairs.
:class:`GraphCrown` bounds one batch of samples; :func:`graph_margins` and :func:`certify_cells` run batches and
radii (smallest first, through :func:`certify_ascending`, which the dense-matrix CROWN uses too).
:mod:`robustclip.bounds.certify` routes every model with a convolution or a structure its dense-matrix CROWN does not
take here.
"""

from .engine import GraphCrown
from .ir import Plan
from .radii import certify_ascending, certify_cells, graph_margins
from .tracing import build_plan

__all__ = ["GraphCrown", "Plan", "build_plan", "certify_ascending", "certify_cells", "graph_margins"]
