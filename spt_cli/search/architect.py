"""SPT-DARTS' architect: one alpha update of the prompt-layer gates per search step.

First order: alpha <- alpha - lr * grad_alpha L_val(w, alpha).
Second order (DARTS, Liu et al. 2019, eq. 7-8): with the virtual step w' = w - xi grad_w
L_train(w, alpha), grad_alpha L_val(w', alpha) - xi * (grad_alpha L_train(w+, alpha) -
grad_alpha L_train(w-, alpha)) / (2 R), where w+- = w +- R grad_w' L_val(w', alpha) and
R = 0.01 / ||grad_w' L_val||. ``search.hessian=forward`` replaces that central difference by the
one-sided (grad_alpha L_train(w+, alpha) - grad_alpha L_train(w, alpha)) / R, reusing the
virtual step's pass for the second term: four passes over a batch instead of five, with an
O(R) instead of O(R^2) truncation error. Everything runs through
``torch.func.functional_call`` on the small trainable weights; the frozen backbone is never
copied. L_train is taken over the weight step's own micro-batches (``trainer.grad_accum``),
one micro-batch at a time, so the virtual step sees the data the weight step then trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.func import functional_call

from spt_cli.config import check_search_options
from spt_cli.search.balance import balanced_loss
from spt_cli.search.protocol import SearchableModel

Grads = Sequence[torch.Tensor | None]


class Architect:
    """Owns the gate optimiser and computes one alpha update per search step.

    Options (``search.*``): ``alpha_optimizer`` adam (DARTS) or sgd (alpha then moves with the
    gradient's size, not only its sign); ``alpha_grad`` raw or centred (the mean over layers
    removed: only the gates' relative preferences move them, not a common drift);
    ``gate_shift`` none or budget (the model's gates keep sum_l a_l = K, S3Delta-style);
    ``anneal``: the temperature goes linearly from the gates' own (``method.tau``) to
    ``tau_end``.
    """

    def __init__(
        self,
        model: SearchableModel,
        scfg: Any,
        weight_lr: float,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        check_search_options(scfg)
        self.model = model
        # None: the model's own (mean) loss on D_alpha; else the class-weighted cross entropy
        # of spt_cli.search.balance (search.alpha_loss=balanced).
        self.class_weights = class_weights
        self.order, self.hessian = str(scfg.order), str(scfg.hessian)
        self.xi = float(scfg.xi or weight_lr)
        self.budget = scfg.budget
        self.penalty = float(scfg.budget_penalty or 0.0)
        self.anneal = bool(scfg.anneal)
        self.tau_start, self.tau_end = float(model.tau), float(scfg.tau_end)
        self.centred = str(scfg.alpha_grad) == "centred"
        self.gates = list(model.gate_parameters())
        self.lr = float(scfg.alpha_lr)
        if str(scfg.alpha_optimizer) == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                self.gates, lr=self.lr, weight_decay=float(scfg.alpha_weight_decay)
            )
        else:
            self.optimizer = torch.optim.Adam(
                self.gates,
                lr=self.lr,
                betas=tuple(float(b) for b in scfg.alpha_betas),
                weight_decay=float(scfg.alpha_weight_decay),
            )
        self.steps = 0  # alpha updates so far
        model.set_gate_budget(float(self.budget) if str(scfg.gate_shift) == "budget" else None)

    # -- the step ----------------------------------------------------------------------------
    def _penalty(self) -> torch.Tensor | float:
        if not self.penalty or self.budget is None:
            return 0.0
        return self.penalty * (self.model.gate_values().sum() - float(self.budget)) ** 2

    def step(
        self, w_batches: Sequence[dict], alpha_batch: dict, step: int, total: int
    ) -> dict[str, float]:
        """One alpha update on ``alpha_batch`` (D_alpha); ``w_batches`` (D_w: the micro-batches
        of this step's weight update) feed the unrolled virtual step of the second order."""
        if self.anneal and total > 1:
            frac = step / (total - 1)
            self.model.set_tau(self.tau_start + frac * (self.tau_end - self.tau_start))
        self.optimizer.zero_grad(set_to_none=True)
        if self.order == "first":
            loss = self._alpha_loss(self.model(**alpha_batch), alpha_batch)
            total_loss = loss + self._penalty()
            grads = torch.autograd.grad(total_loss, self.gates, allow_unused=True)
        else:
            loss, grads = self._second_order(w_batches, alpha_batch)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.gates, grads)]
        if self.centred:
            flat = torch.cat([g.flatten() for g in grads])
            grads = [g - flat.mean() for g in grads]
        for p, g in zip(self.gates, grads):
            p.grad = g
        self.optimizer.step()
        self.steps += 1
        size = float(torch.cat([g.flatten() for g in grads]).abs().mean())
        return {"search/alpha_loss": float(loss.detach()), "search/alpha_grad": size}

    def _weights(self) -> dict[str, torch.Tensor]:
        gate_ids = {id(p) for p in self.gates}
        return {
            n: p
            for n, p in self.model.named_parameters()
            if p.requires_grad and id(p) not in gate_ids
        }

    def _loss(self, params: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
        return functional_call(self.model, params, args=(), kwargs=batch)["loss"]

    def _alpha_loss(self, out: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
        """The D_alpha loss of a forward pass's output: the model's, or class-balanced."""
        if self.class_weights is None:
            return out["loss"]
        return balanced_loss(out["logits"], batch["labels"], self.class_weights)

    def _train_grads(self, params: dict[str, torch.Tensor], batches: Sequence[dict],
                     wrt: Sequence[torch.Tensor]) -> Grads:  # fmt: skip
        """grad of L_train, the mean loss over ``batches``, one micro-batch at a time (as the
        weight step accumulates it)."""
        total: list[torch.Tensor | None] = [None] * len(wrt)
        for batch in batches:
            loss = self._loss(params, batch) / len(batches)
            grads = torch.autograd.grad(loss, wrt, allow_unused=True)
            total = [g if t is None else t if g is None else t + g for t, g in zip(total, grads)]
        return total

    def _second_order(self, w_batches: Sequence[dict], alpha_batch: dict):
        weights = self._weights()
        names = list(weights)
        forward = self.hessian == "forward"
        device = _device(weights)
        before_virtual = _rng_get(device)
        # Virtual step w' = w - xi * grad_w L_train(w, alpha) (plain SGD, as in DARTS' unrolled
        # model; the AdamW moments are not part of the approximation). The one-sided difference
        # also takes grad_alpha L_train(w, alpha) from this pass (almost free: same backward).
        wanted = [weights[n] for n in names] + (self.gates if forward else [])
        grads_train = self._train_grads(weights, w_batches, wanted)
        g_w, g_here = grads_train[: len(names)], grads_train[len(names) :]
        virtual = {
            n: (weights[n] - self.xi * (g if g is not None else 0)).detach().requires_grad_(True)
            for n, g in zip(names, g_w)
        }
        val_out = functional_call(self.model, virtual, args=(), kwargs=alpha_batch)
        val_loss = self._alpha_loss(val_out, alpha_batch) + self._penalty()
        grads = torch.autograd.grad(
            val_loss, self.gates + [virtual[n] for n in names], allow_unused=True
        )
        d_alpha, d_w = grads[: len(self.gates)], grads[len(self.gates) :]
        d_w = [torch.zeros_like(virtual[n]) if g is None else g for n, g in zip(names, d_w)]
        norm = torch.sqrt(sum((g * g).sum() for g in d_w))
        r = 0.01 / (float(norm) + 1e-12)
        with torch.no_grad():
            w_plus = {n: weights[n] + r * g for n, g in zip(names, d_w)}
        if forward:
            # w+ under the virtual pass's random state: both terms see the same dropout masks.
            # The stream then continues from after the validation pass, so later passes do not
            # reuse these masks.
            after_val = _rng_get(device)
            _rng_set(device, before_virtual)
            g_plus = self._train_grads(w_plus, w_batches, self.gates)
            _rng_set(device, after_val)
            g_minus, span = g_here, r
        else:
            with torch.no_grad():
                w_minus = {n: weights[n] - r * g for n, g in zip(names, d_w)}
            g_plus, g_minus = self._gate_grads_at(w_plus, w_minus, w_batches)
            span = 2 * r
        out = []
        for da, gp, gm in zip(d_alpha, g_plus, g_minus):
            da = da if da is not None else 0.0
            hess = ((gp if gp is not None else 0.0) - (gm if gm is not None else 0.0)) / span
            out.append(da - self.xi * hess)
        return val_loss, out

    def _gate_grads_at(
        self, w_plus: dict, w_minus: dict, batches: Sequence[dict]
    ) -> tuple[Grads, Grads]:
        """grad_alpha L_train at w+ and at w-, both passes under the same random state.

        The finite difference divides their gap by 2R (R ~ 0.01 / ||v||, tiny): with dropout
        drawing different masks in the two passes, the mask noise, not the Hessian, would fill
        that gap. Replaying the RNG makes both passes see the same masks; the stream then goes
        on from where one pass leaves it.
        """
        device = _device(w_plus)
        state = _rng_get(device)
        g_plus = self._train_grads(w_plus, batches, self.gates)
        _rng_set(device, state)
        g_minus = self._train_grads(w_minus, batches, self.gates)
        return g_plus, g_minus

    def alphas(self) -> list[float]:
        """alpha_l per candidate layer (one gate parameter per layer)."""
        return [float(x) for g in self.gates for x in g.detach().flatten()]

    # -- logging / state -------------------------------------------------------------------
    def log_values(self) -> dict[str, float]:
        """Gate probability of every candidate layer and the mean gate entropy."""
        probs = self.model.gate_probs()
        out = {
            f"gates/layer_{layer:02d}": float(p)
            for layer, p in zip(self.model.candidate_layers, probs)
        }
        out["search/gate_entropy"] = self.model.gate_entropy()
        out["search/tau"] = float(self.model.tau)
        return out

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "tau": self.model.tau,
                "steps": self.steps}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("tau") is not None:
            self.model.set_tau(state["tau"])
        # Absent in checkpoints written before they were kept.
        self.steps = int(state.get("steps", 0))


def _device(params: dict[str, torch.Tensor]) -> torch.device:
    return next(iter(params.values())).device if params else torch.device("cpu")


def _rng_get(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _rng_set(device: torch.device, state: tuple) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
