"""Our own torchattacks attacks: the CLIP authors' PGD-L2 variant and norm-bounded random noise."""

from __future__ import annotations

import torch
import torchattacks
from torch import nn


class AuthorsPGDL2(torchattacks.attack.Attack):
    r"""The CLIP authors' PGD-L2 variant, re-implemented to reproduce their numbers.

    It differs from standard PGD-L2 (Madry et al.) in three ways, each weaker:

    * steps are ``alpha · sign(grad)`` (an L∞ step) instead of the normalised gradient;
    * after each step the perturbation is rescaled onto the *sphere*
      ``||δ||_2 = ε``, not projected into the ball;
    * a sample stops being updated once the model misclassifies ``x + δ``;
      the iterate is not clipped to [0,1] inside the loop, only at the end.

    The start is uniform noise in ``[-ε, ε]`` per pixel (clipped to the valid
    range), rescaled onto the sphere. The returned images lie in [0,1] and
    within ε in L2. Shapes: images ``(N, C, H, W)`` in [0,1], labels ``(N,)``.
    """

    def __init__(self, model: nn.Module, eps: float = 2.0, alpha: float = 0.5, steps: int = 100,
                 restarts: int = 1) -> None:
        super().__init__("AuthorsPGDL2", model)
        self.eps, self.alpha, self.steps, self.restarts = eps, alpha, steps, restarts
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = images.clone().detach().to(self.device)
        y = labels.clone().detach().to(self.device)
        n = x.shape[0]
        view = (n, *([1] * (x.dim() - 1)))
        loss_fn = nn.CrossEntropyLoss()
        delta0 = torch.empty_like(x).uniform_(-self.eps, self.eps)
        delta0 = torch.max(torch.min(delta0, 1 - x), -x)
        delta0 = delta0 / delta0.flatten(1).norm(dim=1).clamp_min(1e-12).view(view) * self.eps
        delta = delta0.clone()
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        for r in range(self.restarts):
            if r > 0:
                delta = torch.where(active.view(view), delta0, delta)
            for _ in range(self.steps):
                d = delta.clone().requires_grad_(True)
                pred = self.get_logits(x + d)
                active = pred.argmax(1) == y
                if not bool(active.any()):
                    break
                (grad,) = torch.autograd.grad(loss_fn(pred, y), d)
                step = delta + self.alpha * grad.sign()
                step = step / step.flatten(1).norm(dim=1).clamp_min(1e-12).view(view) * self.eps
                delta = torch.where(active.view(view), step, delta).detach()
        return (x + delta).clamp(0, 1).detach()


class BallNoise(torchattacks.attack.Attack):
    """Random noise of norm exactly ε (L2: Gaussian direction; L∞: random signs), clipped to [0,1].

    A norm-bounded noise baseline: if it beats PGD at the same ε, the gradient
    attack is failing (a sign of gradient masking).
    """

    def __init__(self, model: nn.Module, eps: float = 1.0, norm: str = "L2") -> None:
        super().__init__("BallNoise", model)
        self.eps, self.norm = eps, norm

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images.clone().detach().to(self.device)
        if self.norm == "Linf":
            d = self.eps * torch.randint_like(x, 0, 2).mul(2).sub(1)
        else:
            d = torch.randn_like(x)
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1))) * self.eps
        return (x + d).clamp(0, 1).detach()
