"""Where a train step's time goes: torch.profiler (CPU) self time by kind of work.

    python scripts/profile_step.py [--model minilm] [--method prompt_tuning] [--batch 16]
        [--length 128] [--tokens 10] [--threads 1] [--steps 5] [--epoch] [--json out.json]

Profiles the step bench.py's P4 times (zero_grad, forward, backward, AdamW on one batch of
full-length rows) and, with ``--epoch``, P6's retrain epochs of ``spt_fixed`` at L/2 without
and with the lower-layer cache. Every aten op's self time goes to the innermost labelled
region around it: a module (Linear, LayerNorm, GELU, Dropout, Embedding; labelled here by
hooks), attention (``packing.attend``, ``fast._DropoutAttention``), a dropout mask
(``fast.keep_mask``), an autograd backward node (``AddmmBackward0`` -> linear, ...) or the
optimiser; ``bmm``/``softmax`` are attention wherever they run. ``overhead`` is the step's
wall time outside every aten op (Python, the autograd engine, the profiler itself).
Unprofiled medians and the matmul FLOP/s of the same shapes (bench.py's mm reference) are
measured interleaved, so each category's GFLOP/s can be set against what ``torch.mm``
reaches.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

# isort: off
import bench  # first, as spt-run imports spt_cli first; scripts/ is on sys.path as a script
import torch

# isort: on
from torch import nn

from spt_cli.backbones import packing
from spt_cli.model import fast, load_backbone
from spt_cli.model.configs import model_config

CATEGORIES = ("linear", "attention", "layer_norm", "gelu", "dropout", "embed_gather",
              "optimizer", "other_ops", "overhead")  # fmt: skip
MODULES = {  # module type -> category (innermost labelled module wins)
    nn.Linear: "linear",
    nn.LayerNorm: "layer_norm",
    nn.Dropout: "dropout",  # FastDropout is a subclass
    nn.Embedding: "embed_gather",
}
NODES = {  # autograd node (backward) or custom Function (forward) name prefix -> category
    "AddmmBackward": "linear",
    "MmBackward": "linear",
    "LinearBackward": "linear",
    "_DropoutAttention": "attention",  # its forward too: unlabelled when a block runs whole
    "BmmBackward": "attention",
    "SoftmaxBackward": "attention",
    "ScaledDotProduct": "attention",
    "NativeLayerNormBackward": "layer_norm",
    "GeluBackward": "gelu",
    "_MaskedScale": "dropout",
    "NativeDropoutBackward": "dropout",
    "EmbeddingBackward": "embed_gather",
    "IndexBackward": "embed_gather",
    "IndexSelectBackward": "embed_gather",
    "IndexCopyBackward": "embed_gather",
    "CatBackward": "embed_gather",
    "GatherBackward": "embed_gather",
}
OPS = {  # aten ops that belong to one category wherever they run
    "aten::bmm": "attention",
    "aten::_softmax": "attention",
    "aten::_softmax_backward_data": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward": "attention",
}
LABEL = "spt::"


def label(category: str) -> torch.autograd.profiler.record_function:
    return torch.autograd.profiler.record_function(LABEL + category)


def install_labels(model: nn.Module) -> Callable[[], None]:
    """Label the forward of every module kind of MODULES, GELU activations, attention and the
    dropout masks; returns the function that removes the labels again."""
    handles: list = []
    open_: dict[int, list] = defaultdict(list)  # a module's open labels

    def category_of(module: nn.Module) -> str | None:
        if "GELU" in type(module).__name__:
            return "gelu"
        return next((c for t, c in MODULES.items() if isinstance(module, t)), None)

    for module in model.modules():
        cat = category_of(module)
        if cat is None:
            continue

        def pre(mod, args, cat=cat):
            open_[id(mod)].append(label(cat).__enter__())

        def post(mod, args, out):
            open_[id(mod)].pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def wrap(owner: Any, name: str, cat: str) -> Callable[[], None]:
        original = getattr(owner, name)

        @functools.wraps(original)
        def labelled(*args, **kwargs):
            with label(cat):
                return original(*args, **kwargs)

        setattr(owner, name, labelled)
        return lambda: setattr(owner, name, original)

    undo = [wrap(packing, "attend", "attention"), wrap(fast, "keep_mask", "dropout")]

    def remove() -> None:
        for handle in handles:
            handle.remove()
        for fn in undo:
            fn()

    return remove


def category(event: Any) -> str | None:
    """The category of an aten op event: its innermost labelled region, else None."""
    if event.name in OPS:
        return OPS[event.name]
    node = event
    while node is not None:
        name = node.name
        if name.startswith(LABEL):
            return name[len(LABEL) :]
        if name.startswith("Optimizer.") or name.startswith("clip_grad"):
            return "optimizer"
        node_name = name.rsplit(": ", 1)[-1]  # "autograd::engine::evaluate_function: XBackward0"
        for prefix, cat in NODES.items():
            if node_name.startswith(prefix):
                return cat
        node = node.cpu_parent
    return None


def profile(fn: Callable[[], None], steps: int) -> tuple[dict[str, float], float]:
    """(ms per step by category, wall ms per step) of ``steps`` profiled calls of ``fn``."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=acts) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        wall = time.perf_counter() - start
    ms: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)
    in_ops = 0.0
    for event in prof.events():
        if event.name.startswith("aten::"):
            cat = category(event) or "other_ops"
            ms[cat] += event.self_cpu_time_total / 1e3
            in_ops += event.self_cpu_time_total / 1e3
        elif (cat := category(event)) == "optimizer":  # the optimiser's own Python time
            ms[cat] += event.self_cpu_time_total / 1e3
            in_ops += event.self_cpu_time_total / 1e3
    ms["overhead"] = max(0.0, wall * 1e3 - in_ops)
    return {k: v / steps for k, v in ms.items()}, wall * 1e3 / steps


def flops_by_category(fn: Callable[[], None]) -> dict[str, float]:
    """Matmul FLOPs of one call: mm/addmm (the linear layers), bmm and scaled-dot-product
    attention (attention)."""
    with bench.flop_counter() as counter:
        fn()
    out: dict[str, float] = defaultdict(float)
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        name = str(op)
        out["linear" if name.split(".")[1] in ("mm", "addmm") else "attention"] += n
    return dict(out)


def table(name: str, ms: dict[str, float], wall: float, median_s: float, flops: dict,
          mm_gflops: float) -> str:  # fmt: skip
    total = sum(ms.values())
    lines = [
        f"## {name}: {median_s * 1e3:.0f} ms a step unprofiled (median), {wall:.0f} ms profiled",
        "",
        "| category | ms | % | GFLOP | GFLOP/s | of mm |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cat in CATEGORIES:
        f = flops.get(cat)
        rate = f / ms[cat] / 1e6 if f and ms[cat] else None
        lines.append(
            f"| {cat} | {ms[cat]:.1f} | {100 * ms[cat] / total:.1f} | "
            f"{bench._fmt(f / 1e9 if f else None, '.1f')} | {bench._fmt(rate, '.0f')} | "
            f"{bench._fmt(rate / mm_gflops if rate else None, '.2f')} |"
        )
    mm_ms = sum(ms[c] for c in ("linear", "attention"))
    all_flops = sum(flops.values())
    lines += [
        f"| total | {total:.1f} | 100 | {all_flops / 1e9:.1f} | {all_flops / total / 1e6:.0f} | "
        f"{all_flops / total / 1e6 / mm_gflops:.2f} |",
        "",
        f"matmul share of the time {mm_ms / total:.2f}; FLOP/s over mm's with every other "
        f"category at 0 ms: {all_flops / mm_ms / 1e6 / mm_gflops:.2f}; with the matmuls at mm's "
        f"FLOP/s and the rest as measured: "
        f"{(all_flops / mm_gflops / 1e6) / (all_flops / mm_gflops / 1e6 + total - mm_ms):.2f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--method", default="prompt_tuning")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="profiled steps (and timed rounds)")
    ap.add_argument("--epoch", action="store_true", help="also P6's epochs without/with cache")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    mcfg = model_config(args.model)
    hf, tok = load_backbone(mcfg)
    batch = bench.make_batch(tok, args.batch, args.length, 0)
    model = bench.ours(mcfg, hf, tok, args.method, args.tokens)
    fns = {args.method: bench.train_step(model, batch)}
    models = {args.method: model}
    if args.epoch:
        mid = int(hf.config.num_hidden_layers) // 2
        epoch_model = bench.ours(mcfg, hf, tok, "spt_fixed", args.tokens, layers=[mid])
        feats = bench.few_shot_features(tok, 32, args.length, 2)
        pair = bench.epoch_fns(epoch_model, feats, args.batch, int(tok.pad_token_id or 0))
        fns["epoch_nocache"], fns["epoch_cache"] = pair
        models["epoch_nocache"] = models["epoch_cache"] = epoch_model
    mm_run, mm_flops = bench.mm_reference(hf.config, args.batch, args.length + args.tokens)
    timing = bench.interleaved({**fns, "mm_reference": mm_run}, 1, args.steps)
    mm_gflops = mm_flops / timing["mm_reference"]["median_s"] / 1e9

    out: dict[str, Any] = {"model": args.model, "threads": torch.get_num_threads(),
                           "mm_gflops": mm_gflops, "profiles": {}}  # fmt: skip
    print(f"# profile: {args.model}, batch {args.batch} x {args.length}, p={args.tokens}, "
          f"{torch.get_num_threads()} thread(s); mm reference {mm_gflops:.0f} GFLOP/s")  # fmt: skip
    for name, fn in fns.items():
        flops = flops_by_category(fn)
        remove = install_labels(models[name])
        try:
            ms, wall = profile(fn, args.steps)
        finally:
            remove()
        median = timing[name]["median_s"]
        out["profiles"][name] = {"ms": ms, "profiled_ms": wall, "median_s": median,
                                 "flops": flops}  # fmt: skip
        print("\n" + table(name, ms, wall, median, flops, mm_gflops))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
