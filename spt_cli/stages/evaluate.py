"""``spt-run eval``: a saved inference artefact evaluated on a dataset's dev and test splits."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from spt_cli.errors import ConfigError
from spt_cli.stages.common import Setup, encode_split, load_data, pad_id
from spt_cli.stages.common import test_metrics as measure_test
from spt_cli.stages.results import Fit, report, write_results


def stage_eval(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float | None:
    """Evaluate a saved artefact on the dataset's dev and test splits."""
    from spt_cli.model.artifact import find_artifact, load_artifact, read_artifact_config
    from spt_cli.train.evaluate import evaluate
    from spt_cli.train.loop import resolve_device

    t0 = time.time()
    if not cfg.artifact:
        raise ConfigError(
            "eval needs artifact=<dir>, e.g. artifact=outputs/search/rte/.../artifact"
        )
    art = find_artifact(str(cfg.artifact))
    meta = read_artifact_config(art)
    saved_model = (meta.get("model") or {}).get("name")
    if (
        any(o.startswith("model=") for o in overrides)
        and saved_model
        and saved_model != str(cfg.model.name)
    ):
        raise ConfigError(
            f"artifact was trained on backbone {saved_model}, not model={cfg.model.name}; "
            f"drop the model override or use model={saved_model}"
        )
    model = load_artifact(art)
    task, data = load_data(cfg)
    s = Setup(task, data, None, model.tokenizer)
    device = resolve_device(str(cfg.trainer.device))
    model.to(device)
    head = model.head_name
    dev = evaluate(
        model,
        encode_split(cfg, s, data.dev, head),
        task,
        batch_size=int(cfg.trainer.eval_batch_size),
        pad_token_id=pad_id(s.tokenizer),
        device=device,
    )
    fit = Fit(
        method=model.spec.name,
        head=head,
        layers=list(model.spec.layers or []),
        dev=dev,
        test=measure_test(model, cfg, s, head, device),
        parameters=model.parameter_table(),
    )
    results = write_results(cfg, run_dir, s, "eval", fit, t0, artifact=str(art))
    report(results)
    return dev.get(task.main_metric)
