"""Trainable-parameter accounting, like PEFT's print_trainable_parameters.

Counted honestly: every trainable module (prompts, generators, gates, prefixes, head) and the
backbone only when it is trained (finetune). Percentages are of the backbone's size.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def _count(module: nn.Module | None, trainable_only: bool = True) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_table(model: Any) -> dict[str, Any]:
    """{"modules": [{"module", "trainable", "percent_of_backbone"}], "trainable", "backbone",
    "percent"} for a GatedPromptModel."""
    backbone = _count(model.backbone, trainable_only=False)
    spec = model.spec
    rows: list[tuple[str, int]] = []
    if model.input_prompt is not None:
        rows.append(("input prompt (block 0, static)", _count(model.input_prompt)))
    for key, gen in model.generators.items():
        rows.append((f"generator block {key} ({spec.generator})", _count(gen)))
    if model.prefix is not None:
        rows.append((f"key/value prefixes ({len(spec.layers)} blocks)", _count(model.prefix)))
    if model.gates is not None and model.gates.learned:
        rows.append((f"gates ({spec.gate}, {len(spec.layers)} layers)", _count(model.gates)))
    if model.head is not None:
        rows.append((f"head ({model.head_name})", _count(model.head)))
    else:
        rows.append((f"head ({model.head_name}, pretrained LM head, frozen)", 0))
    if spec.train_backbone:
        rows.append(("backbone (fine-tuned)", _count(model.backbone)))
    total = sum(n for _, n in rows)
    pct = (lambda n: 100.0 * n / backbone) if backbone else (lambda n: 0.0)
    return {
        "modules": [
            {"module": name, "trainable": n, "percent_of_backbone": pct(n)} for name, n in rows
        ],
        "trainable": total,
        "backbone": backbone,
        "percent": pct(total),
    }


def format_parameter_table(table: dict[str, Any]) -> str:
    """A plain-text table of :func:`parameter_table`'s dict."""
    rows = [(m["module"], f"{m['trainable']:,}", f"{m['percent_of_backbone']:.4f}%")
            for m in table["modules"]]  # fmt: skip
    rows.append(("total trainable", f"{table['trainable']:,}", f"{table['percent']:.4f}%"))
    rows.append(("backbone", f"{table['backbone']:,}", "100%"))
    head = ("module", "trainable", "% of backbone")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]

    def line(r: tuple[str, str, str]) -> str:
        return f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}"

    rule = "-" * (sum(widths) + 4)
    body = [line(r) for r in rows[:-2]]
    return "\n".join([line(head), rule, *body, rule, line(rows[-2]), line(rows[-1])])
