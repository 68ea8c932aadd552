"""``spt-run data``: a readable summary of a task's splits under the configured protocol."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from spt_cli.config import split_name
from spt_cli.files import write_json
from spt_cli.stages.common import load_data


def stage_data(cfg: DictConfig, run_dir: Path) -> None:
    """Print a readable summary of the task's splits and write summary.json."""
    from spt_cli.data import encode
    from spt_cli.stages.summary import format_summary, summarize

    task, data = load_data(cfg)
    tokenizer = None
    try:
        from spt_cli.model import load_backbone

        tokenizer = load_backbone(cfg.model)[1]
    except Exception as exc:  # noqa: BLE001 - token lengths are optional in the summary
        print(f"warning: no tokenizer for token lengths ({exc})", file=sys.stderr)
    summary = summarize(data, tokenizer=tokenizer)
    summary["split"] = split_name(cfg)
    summary["shots"] = int(cfg.shots)
    summary["seed"] = int(cfg.seed)
    example = data.train[0]
    rendered = None
    if tokenizer is not None:
        head = "mlm" if tokenizer.mask_token else "lm"
        ds = encode([example], tokenizer, task, int(cfg.data.max_seq_length), head)
        rendered = tokenizer.decode(ds[0]["input_ids"])
    print(format_summary(summary, example, rendered))
    write_json(run_dir / "summary.json", summary)
