"""SPT's learnable gates and the mixture they control (method.md section 1).

At a candidate layer l, with H_P(l-1) the p prompt states and H_X(l-1) the text states entering
block l, the prompt the block sees is

    P_in(l) = a_l * G_l(H_X(l-1)) + (1 - a_l) * H_P(l-1),      a_l = sigmoid(alpha_l / tau)

(:func:`mix`). ``a_l = 1`` injects the newly generated prompt, ``a_l = 0`` carries the prompt
states up from below.
"""

from __future__ import annotations

import torch
from torch import nn


def mix(a: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """P_in(l) = a_l * G_l(H_X(l-1)) + (1 - a_l) * H_P(l-1)."""
    return a * new + (1 - a) * old


def budget_shift(alpha: torch.Tensor, tau: float, budget: float, iters: int = 60) -> torch.Tensor:
    """The shift b with sum_l sigmoid((alpha_l - b) / tau) = budget (bisection; no gradient).

    S3Delta's budgeted gates: the expected number of open gates is held at K, so the gates
    compete for K places instead of all drifting open or shut together.
    """
    with torch.no_grad():
        a = alpha.detach().double()
        lo, hi = float(a.min()) - 50.0 * tau, float(a.max()) + 50.0 * tau
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            if float(torch.sigmoid((a - mid) / tau).sum()) > budget:
                lo = mid
            else:
                hi = mid
        return torch.tensor(0.5 * (lo + hi), dtype=alpha.dtype, device=alpha.device)


class LayerGates(nn.Module):
    """Learnable gates a_l = sigmoid((alpha_l - b) / tau), alpha initialised to 0 (a_l = 0.5).

    ``b`` is 0, or with ``budget`` = K the shift that keeps sum_l a_l = K (:func:`budget_shift`).
    ``stochastic``: in training, a relaxed-Bernoulli sample per layer and forward whose forward
    value is hard (0/1) and whose gradient is the relaxed sample's (straight-through); in eval
    the expected value. :meth:`override` fixes the values (a layer ablation).
    """

    def __init__(self, num_gates: int, tau: float = 1.0, stochastic: bool = False) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(num_gates))
        self.tau = float(tau)
        self.stochastic = stochastic
        self.budget: float | None = None
        self.fixed: torch.Tensor | None = None

    def shift(self) -> torch.Tensor | float:
        """b: 0, or the budget shift."""
        if self.budget is None:
            return 0.0
        return budget_shift(self.alpha, self.tau, self.budget)

    def probs(self) -> torch.Tensor:
        """a_l = sigmoid((alpha_l - b) / tau), differentiable in alpha."""
        return torch.sigmoid((self.alpha - self.shift()) / self.tau)

    def forward(self) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed.to(self.alpha.dtype)
        if not (self.stochastic and self.training):
            return self.probs()
        u = torch.rand_like(self.alpha).clamp(1e-6, 1 - 1e-6)
        logits = self.alpha - self.shift()
        soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / self.tau)
        hard = (soft > 0.5).to(soft.dtype)
        return hard + soft - soft.detach()

    def closed(self, index: int) -> bool:
        """Whether gate ``index`` is fixed at exactly 0 by :meth:`override` (learned gates never
        are: sigmoid is never 0, and a hard stochastic sample still carries a gradient)."""
        return self.fixed is not None and float(self.fixed[index]) == 0.0

    def override(self, values: torch.Tensor | None) -> None:
        """Use ``values`` as the gates in every forward (None: the learned gates again)."""
        self.fixed = None if values is None else values.detach().to(self.alpha.device)
