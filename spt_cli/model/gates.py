"""SPT's learnable gates and the mixture they control (method.md section 1).

At a candidate layer l, with H_P(l-1) the p prompt states and H_X(l-1) the text states entering
block l, the prompt the block sees is

    P_in(l) = a_l * G_l(H_X(l-1)) + (1 - a_l) * H_P(l-1),      a_l = sigmoid(alpha_l / tau)

(:func:`mix`). ``a_l = 1`` injects the newly generated prompt, ``a_l = 0`` carries the prompt
states up from below. How a_l is produced is a gate type (:class:`Gates`): soft, stochastic or
hard, chosen by ``method.gate`` (:data:`GATE_TYPES`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

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


class Gates(nn.Module, ABC):
    """The gates a_l of a model's prompt layers, one per layer: the interface a gate type
    implements and the model, the architect and the diagnostics use.

    ``probs()``: P(open) per layer, differentiable in the gate parameters; ``forward()``: the
    values the model mixes with (:meth:`sample` in training, the probabilities in eval, or
    the values of :meth:`override`); ``entropy()``: how undecided the gates are;
    ``closed(i)``: gate i is fixed at exactly 0. ``learned``: the type has parameters (the
    logits alpha) that a search steps. ``tau``: the temperature (:meth:`set_tau`), ``budget``:
    K, when the gates are held at K open in expectation (:meth:`set_budget`).
    """

    learned: ClassVar[bool]

    def __init__(self, num_gates: int, tau: float = 1.0) -> None:
        super().__init__()
        self.num_gates = num_gates
        self.tau = float(tau)
        self.budget: float | None = None
        self.fixed: torch.Tensor | None = None

    @abstractmethod
    def probs(self) -> torch.Tensor:
        """a_l = P(gate l open) [num_gates], differentiable in the gate parameters."""

    @abstractmethod
    def anchor(self) -> torch.Tensor:
        """A tensor of the gates' dtype and device (their parameter, or a buffer)."""

    def sample(self) -> torch.Tensor:
        """The values of a training forward (default: the probabilities themselves)."""
        return self.probs()

    def forward(self) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed.to(self.anchor().dtype)
        return self.sample() if self.training else self.probs()

    def entropy(self) -> torch.Tensor:
        """Mean entropy (nats) of independent Bernoulli gates with P(open) = a_l: 0 when every
        gate is 0 or 1."""
        return binary_entropy(self.probs().detach())

    def closed(self, index: int) -> bool:
        """Whether gate ``index`` is fixed at exactly 0 by :meth:`override` (learned gates never
        are: sigmoid is never 0, and a hard stochastic sample still carries a gradient)."""
        return self.fixed is not None and float(self.fixed[index]) == 0.0

    def override(self, values: torch.Tensor | None) -> None:
        """Use ``values`` as the gates in every forward (None: the gates' own values again)."""
        self.fixed = None if values is None else values.detach().to(self.anchor().device)

    def set_tau(self, tau: float) -> None:
        """Set the temperature (annealing)."""
        self.tau = float(tau)

    def set_budget(self, budget: float | None) -> None:
        """Hold sum_l a_l at ``budget`` (None: free gates)."""
        self.budget = budget


class SoftGates(Gates):
    """The DARTS mixture: a_l = sigmoid((alpha_l - b) / tau), alpha initialised to 0 (a_l =
    0.5). ``b`` is 0, or with a budget K the shift that keeps sum_l a_l = K
    (:func:`budget_shift`)."""

    learned = True

    def __init__(self, num_gates: int, tau: float = 1.0) -> None:
        super().__init__(num_gates, tau)
        self.alpha = nn.Parameter(torch.zeros(num_gates))

    def anchor(self) -> torch.Tensor:
        return self.alpha

    def shift(self) -> torch.Tensor | float:
        """b: 0, or the budget shift."""
        if self.budget is None:
            return 0.0
        return budget_shift(self.alpha, self.tau, self.budget)

    def probs(self) -> torch.Tensor:
        return torch.sigmoid((self.alpha - self.shift()) / self.tau)


class StochasticGates(SoftGates):
    """Soft gates whose training forward is a relaxed-Bernoulli sample per layer, hard (0/1)
    in value with the relaxed sample's gradient (straight-through); eval: the probabilities."""

    def sample(self) -> torch.Tensor:
        u = torch.rand_like(self.alpha).clamp(1e-6, 1 - 1e-6)
        logits = self.alpha - self.shift()
        soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / self.tau)
        hard = (soft > 0.5).to(soft.dtype)
        return hard + soft - soft.detach()


class HardGates(Gates):
    """Fixed open gates (a_l = 1 at every prompt layer): no parameters, nothing to search."""

    learned = False

    def __init__(self, num_gates: int, tau: float = 1.0) -> None:
        super().__init__(num_gates, tau)
        # Not in the state dict: artefacts and checkpoints keep the tensors they always had.
        self.register_buffer("ones", torch.ones(num_gates), persistent=False)

    def anchor(self) -> torch.Tensor:
        return self.ones

    def probs(self) -> torch.Tensor:
        return self.ones

    def set_budget(self, budget: float | None) -> None:
        """Nothing to hold: fixed gates have no expected count to shift."""


# The gate types ``method.gate`` chooses from; a new type is one class above and one entry here.
GATE_TYPES: dict[str, type[Gates]] = {
    "soft": SoftGates,
    "stochastic": StochasticGates,
    "hard": HardGates,
}


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of independent Bernoulli gates: 0 when every gate is 0 or 1."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return (-(p * p.log() + (1 - p) * (1 - p).log())).mean()
