"""Deriving the prompt layers from the searched gates."""

from __future__ import annotations

from collections.abc import Sequence

from spt_cli.errors import ConfigError
from spt_cli.search.diagnostics import evidence, separation


def select_layers(
    probs: dict[int, float], budget: int | None = None, threshold: float | None = None
) -> list[int]:
    """Derive the prompt layers: every layer above ``threshold`` if given, else the ``budget``
    layers with the largest gate probability (ties broken towards the lower layer)."""
    if threshold is not None:
        return sorted(layer for layer, p in probs.items() if p > threshold)
    ranked = sorted(probs, key=lambda layer: (-probs[layer], layer))
    return sorted(ranked[: int(budget)])


def last_k(candidates: Sequence[int], budget: int) -> list[int]:
    """The ``budget`` highest candidate blocks (Late Prompt Tuning's pick)."""
    return sorted(candidates)[-int(budget) :]


def middle_k(candidates: Sequence[int], budget: int) -> list[int]:
    """The ``budget`` consecutive candidates centred nearest the backbone's middle block (L/2,
    the block LPT prompts; candidates are blocks 1..L-1); ties go to the later set."""
    cands = sorted(candidates)
    k = int(budget)
    middle = (max(cands) + 1) / 2
    windows = [cands[i : i + k] for i in range(len(cands) - k + 1)]
    return min(windows, key=lambda w: (abs(sum(w) / k - middle), -w[0]))


# The named layer sets (config.CONTROL_SETS) a controls run retrains beside its sample and a
# search compares with its own selection (search.keep_best_of).
NAMED_SETS = {"last_k": last_k, "middle_k": middle_k}


def named_sets(
    names: Sequence[str], candidates: Sequence[int], budget: int
) -> list[tuple[str, list[int]]]:
    """``(name, layers)`` of each named set, in the order given."""
    return [(str(name), NAMED_SETS[str(name)](candidates, budget)) for name in names]


def half(budget: int) -> int:
    """K/2 rounded up (at least 1): the smaller budget ``search.keep_best_of`` can compare."""
    return max(1, (int(budget) + 1) // 2)


# search.keep_best_of's entries (config.KEEP_BEST_SETS): a named set or the searched set, at
# the search's budget K or at half of it ("_half": K/2 rounded up).
HALVED = {"last_half": "last_k", "middle_half": "middle_k", "searched_half": "searched"}


def keep_best_sets(
    names: Sequence[str],
    candidates: Sequence[int],
    budget: int,
    searched: list[int],
    searched_half: list[int] | None,
) -> list[tuple[str, list[int]]]:
    """``(name, layers)`` of each set ``search.keep_best_of`` retrains, in its order (ties on
    dev go to the earlier), each set once: the named sets at K or K/2, ``searched`` (appended
    last when not listed) and ``searched_half``, the search's own rule at K/2 (None: left
    out, when it cannot be re-derived)."""
    sets: list[tuple[str, list[int]]] = []
    listed = [*names, *([] if "searched" in names else ["searched"])]
    for name in map(str, listed):
        base = HALVED.get(name, name)
        size = half(budget) if name in HALVED else budget
        if base == "searched":
            layers = searched_half if name in HALVED else searched
        else:
            layers = NAMED_SETS[base](candidates, size)
        if layers is not None and all(sorted(layers) != x for _, x in sets):
            sets.append((name, sorted(layers)))
    return sets


def keep_best(devs: Sequence[float]) -> int:
    """The index of the best dev score, ties to the earliest: a rule that retrains a few sets
    and chooses among them on dev (never on test) lists them in order of preference."""
    return max(range(len(devs)), key=lambda i: (devs[i], -i))


def choose_layers(
    *,
    select: str,
    fallback: str,
    by_gates: list[int],
    by_ablation: list[int],
    candidates: Sequence[int],
    budget: int,
    separated: bool,
    evidence: str,
) -> tuple[list[int], dict[str, str]]:
    """The layers a search keeps and why: ``(layers, {"rule": ..., "reason": ...})``.

    ``search.select=ablation`` keeps the ablation's pick whatever the gates did. With
    ``select=gates`` the top-K gates are kept when they separated; when they did not, their
    ranking is close to chance and ``fallback`` decides: ``none`` keeps them anyway,
    ``last_k`` takes the last K candidate blocks, ``ablation`` the ablation's pick.
    ``evidence``: the gates' separation in words, quoted in the reason.
    """
    if select == "ablation":
        return by_ablation, {"rule": "ablation", "reason": "search.select=ablation"}
    if separated:
        return by_gates, {"rule": "gates", "reason": f"the gates separated ({evidence})"}
    reason = f"the gates did not separate ({evidence})"
    if fallback == "none":
        return by_gates, {"rule": "gates", "reason": f"{reason}; search.fallback=none"}
    if fallback == "last_k":
        layers = last_k(candidates, budget)
        return layers, {"rule": "last_k", "reason": f"{reason}; search.fallback=last_k"}
    if fallback == "ablation":
        return by_ablation, {"rule": "ablation", "reason": f"{reason}; search.fallback=ablation"}
    raise ValueError(f"unknown search.fallback={fallback}")


def derive_selection(
    probs: dict[int, float],
    ablation: dict[int, float],
    candidates: Sequence[int],
    budget: int,
    select: str,
    fallback: str,
    threshold: float | None = None,
) -> tuple[list[int], dict[str, str], list[int], list[int]]:
    """The layers a finished search keeps from its final gates and ablation scores:
    ``(layers, {"rule", "reason"}, by_gates, by_ablation)``. Nothing here depends on how the
    search ran, so a saved search can be re-derived at another budget."""
    by_gates = select_layers(probs, budget, threshold)
    by_ablation = select_layers(ablation, budget)
    if not by_gates and select == "gates":
        raise ConfigError(
            f"search.threshold={threshold} keeps no layer (max gate probability "
            f"{max(probs.values()):.3f}); lower it or use search.budget"
        )
    sep = separation(probs, by_gates) if by_gates else {"separated": False}
    layers, selection = choose_layers(
        select=select,
        fallback=fallback,
        by_gates=by_gates,
        by_ablation=by_ablation,
        candidates=candidates,
        budget=budget,
        separated=sep["separated"],
        evidence=evidence(probs, sep, budget) if by_gates else "no gate above the threshold",
    )
    return layers, selection, by_gates, by_ablation
