"""What a finished search can tell about itself: did the gates separate, how far did alpha move
against what the optimiser could move it, and how large is the new prompt term against the
carried one.

- drift_l = |alpha_l| / (alpha_lr * alpha steps): near 1 means alpha moved by about the
  learning rate every step in one direction (Adam does that whatever the gradient's size), so
  the gate records how often its gradient kept one sign rather than how large it was.
- the mixture P_in(l) = a_l G_l + (1 - a_l) H_P: ||a_l G_l|| and ||(1 - a_l) H_P|| (mean L2
  norm of the p x d term per example, on D_alpha at the end of the search).
- separated: the kept gates stand apart from the rest (gap >= 0.1) and the gates are not all on
  one side of 0.5. Otherwise the ranking, hence the selection, is close to chance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

SEPARATION_GAP = 0.1


class MixMeter:
    """Model observer (``model.mix_observer``) averaging the two terms of each gated mixture."""

    def __init__(self) -> None:
        self.sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def __call__(self, layer: int, a: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> None:
        with torch.no_grad():
            a = a.detach().float()
            new_term = (a * new.detach().float()).flatten(1).norm(dim=1)
            old_term = ((1 - a) * old.detach().float()).flatten(1).norm(dim=1)
        entry = self.sums[layer]
        entry[0] += float(new_term.sum())
        entry[1] += float(old_term.sum())
        entry[2] += new_term.numel()

    def means(self) -> dict[int, tuple[float, float]]:
        """Per layer (mean ||a G||, mean ||(1 - a) H_P||) over the examples seen."""
        return {k: (v[0] / max(v[2], 1), v[1] / max(v[2], 1)) for k, v in self.sums.items()}


def separation(probs: dict[int, float], selected: Sequence[int]) -> dict[str, Any]:
    """Gap between the weakest kept gate and the strongest other one, and whether the gates
    separated (see the module docstring)."""
    kept = [probs[k] for k in selected]
    rest = [p for k, p in probs.items() if k not in selected]
    gap = (min(kept) - max(rest)) if kept and rest else 1.0
    one_side = all(p < 0.5 for p in probs.values()) or all(p > 0.5 for p in probs.values())
    return {"gap": gap, "one_side": one_side, "separated": gap >= SEPARATION_GAP and not one_side}


def evidence(probs: dict[int, float], sep: dict[str, Any], budget: int) -> str:
    """The separation diagnostic in words: why the gates did (not) separate."""
    values = sorted(probs.values())
    if sep["separated"]:
        return f"top-{budget} {sep['gap']:.3f} above the rest, not all on one side of 0.5"
    reasons = []
    if sep["one_side"]:
        side = "below" if values[-1] < 0.5 else "above"
        reasons.append(f"every gate {side} 0.5 ({values[0]:.3f}-{values[-1]:.3f})")
    if sep["gap"] < SEPARATION_GAP:
        reasons.append(f"top-{budget} vs the rest only {sep['gap']:.3f} apart")
    return "; ".join(reasons)


def warning(
    probs: dict[int, float],
    sep: dict[str, Any],
    budget: int,
    select: str = "gates",
    fallback: str = "none",
    layers: Sequence[int] = (),
) -> str | None:
    """A one-line warning, naming the action taken (``search.fallback``) or what to try, when
    the gates did not separate; ``layers``: the layers the search kept."""
    if sep["separated"]:
        return None
    head = f"the gates did not separate ({evidence(probs, sep, budget)})"
    if select == "ablation":
        return f"{head}; the gates are not what selected the layers (search.select=ablation)"
    if fallback == "last_k":
        return (
            f"{head}: kept the last {budget} blocks {list(layers)} instead "
            "(search.fallback=last_k); compare with spt-run controls"
        )
    if fallback == "ablation":
        return (
            f"{head}: kept the ablation's pick {list(layers)} instead "
            "(search.fallback=ablation); compare with spt-run controls"
        )
    return (
        f"{head}: the selection is close to chance; try search.fallback=last_k, "
        "search.select=ablation or search.gate_shift=budget, and compare with spt-run controls"
    )


def diagnose(
    probs: dict[int, float],
    alphas: dict[int, float],
    selected: Sequence[int],
    budget: int,
    alpha_lr: float,
    alpha_steps: int,
    mix: dict[int, tuple[float, float]],
    select: str = "gates",
    fallback: str = "none",
    by_gates: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Everything results.json keeps about a search, per candidate layer and overall.

    ``selected``: the layers kept; ``by_gates``: the gates' own pick when another rule kept
    ``selected`` (the separation describes the gates, so it is measured on their pick)."""
    capacity = alpha_lr * max(alpha_steps, 1)
    layers = {
        str(k): {
            "gate": probs[k],
            "alpha": alphas[k],
            "drift": abs(alphas[k]) / capacity,
            "new_term": mix.get(k, (float("nan"),) * 2)[0],
            "carried_term": mix.get(k, (float("nan"),) * 2)[1],
            "selected": k in selected,
        }
        for k in sorted(probs)
    }
    sep = separation(probs, selected if by_gates is None else by_gates)
    return {
        "layers": layers,
        "alpha_steps": alpha_steps,
        **sep,
        "warning": warning(probs, sep, budget, select, fallback, selected),
    }


def format_diagnostics(diag: dict[str, Any]) -> str:
    """The console table of a search's diagnostics (with ``search.dev_ablation``, a column of
    the ablation scores on dev)."""
    dev = {str(k): float(v) for k, v in (diag.get("dev_ablation_scores") or {}).items()}
    lines = ["layer    gate    alpha   drift   ||a G||  ||(1-a) H_P||  kept"
             + ("  ablation on dev" if dev else "")]  # fmt: skip
    for layer, d in diag["layers"].items():
        kept = "*" if d["selected"] else " " if dev else ""
        lines.append(
            f"{layer:>5} {d['gate']:>7.3f} {d['alpha']:>8.3f} {d['drift']:>7.2f} "
            f"{d['new_term']:>9.3f} {d['carried_term']:>14.3f}  {kept}"
            + (f"   {dev[layer]:>+14.4f}" if layer in dev else "")
        )
    state = "separated" if diag["separated"] else "NOT separated"
    lines.append(f"gates {state} (gap {diag['gap']:.3f}); alpha steps {diag['alpha_steps']}")
    return "\n".join(lines)
