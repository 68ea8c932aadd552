"""Trainable parameters and median train-step time of every method on one backbone.

A train step is forward + backward + AdamW step on a random batch (full-length rows, no
padding). Usage (defaults: MiniLM, batch 16 x 128, 3 warm-up + 5 timed steps):

    python scripts/model_step_times.py [--model minilm] [--batch 16] [--length 128]
        [--methods spt lpt ...] [--fixed-layers 2 4] [--threads N] [--device cpu] [--json out.json]

Another process on the same cores slows every figure; compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from spt_cli.config import default_budget
from spt_cli.model import build_model, load_backbone
from spt_cli.model.configs import head_config, method_config, model_config
from spt_cli.model.heads import TaskInfo

METHODS = [
    "finetune",
    "prompt_tuning",
    "deep_prompt",
    "ptuning_v2",
    "lpt",
    "spt_fixed",
    "fixed_layers",
    "random_layers",
    "spt",
]


def step_times(model, batch: dict, warmup: int, steps: int) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + steps):
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(**batch)["loss"].backward()
        opt.step()
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument(
        "--fixed-layers",
        nargs="+",
        type=int,
        default=None,
        help="layers of spt_fixed/fixed_layers (default: round(L/3) evenly spaced)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    mcfg = model_config(args.model)
    hf, tok = load_backbone(mcfg)
    num_layers = int(hf.config.num_hidden_layers)
    k = default_budget(num_layers)
    fixed = args.fixed_layers or [round((i + 1) * num_layers / (k + 1)) for i in range(k)]
    task = TaskInfo("bench", 2, None, False, ["a", "b"])  # classifier head on any backbone

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, len(tok), (args.batch, args.length), generator=gen)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.randint(0, 2, (args.batch,), generator=gen),
    }
    if "token_type_ids" in tok.model_input_names:
        batch["token_type_ids"] = torch.zeros_like(ids)
    batch = {k: v.to(args.device) for k, v in batch.items()}

    rows = []
    threads = torch.get_num_threads()
    print(
        f"# {args.model}: batch {args.batch} x {args.length}, threads {threads}, "
        f"device {args.device}",
        file=sys.stderr,
    )
    for method in args.methods:
        torch.manual_seed(0)
        layers = fixed if method in ("spt_fixed", "fixed_layers") else None
        model = build_model(
            mcfg,
            method_config(method),
            head_config("classifier"),
            task,
            backbone=hf,
            tokenizer=tok,
            layers=layers,
        ).to(args.device)
        table = model.parameter_table()
        times = step_times(model, batch, args.warmup, args.steps)
        rows.append(
            {
                "method": method,
                # "in" marks the input prompt (block 0, prepended to the word embeddings)
                "layers": (["in"] if model.input_prompt is not None else [])
                + model.candidate_layers,
                "trainable": table["trainable"],
                "percent": table["percent"],
                "median_step_s": statistics.median(times),
                "min_step_s": min(times),
            }
        )
        print(f"{method}: {rows[-1]['median_step_s']:.3f} s", file=sys.stderr)
        del model
    base = next((r["median_step_s"] for r in rows if r["method"] == "prompt_tuning"), None)
    print("| method | prompt layers | trainable | % of backbone | median step (s) | vs PT |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['median_step_s'] / base:.2f}" if base else "-"
        layers = ",".join(map(str, r["layers"])) or "-"
        print(
            f"| {r['method']} | {layers} | {r['trainable']:,} | {r['percent']:.3f} | "
            f"{r['median_step_s']:.3f} | {ratio} |"
        )
    if args.json:
        meta = {"model": args.model, "batch": args.batch, "length": args.length}
        with open(args.json, "w") as fh:
            json.dump({**meta, "threads": threads, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
