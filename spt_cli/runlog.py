"""One sink for every number of a run: local ``metrics.jsonl`` plus W&B."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from spt_cli.files import atomic_write
from spt_cli.net import unreachable


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


class RunLogger:
    """Writes metrics to ``<run_dir>/metrics.jsonl`` and, when enabled, to a W&B run.

    W&B is best effort: any failure there becomes a one-line warning and the run continues with
    complete local files.
    """

    def __init__(
        self,
        run_dir: str | Path,
        logger_cfg: Any = None,
        *,
        job_type: str = "train",
        group: str | None = None,
        run_config: dict | None = None,
        name: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.wandb_run = None
        self._wandb_failed = False
        if logger_cfg is not None and str(logger_cfg.get("name", "none")) == "wandb":
            self._init_wandb(logger_cfg, job_type, group, run_config, name)

    # -- W&B -------------------------------------------------------------------------------
    def _init_wandb(
        self, lcfg: Any, job_type: str, group: str | None, config: dict | None, name: str | None
    ) -> None:
        mode = os.environ.get("WANDB_MODE") or str(lcfg.get("mode") or "offline")
        if mode == "disabled":
            return
        wdir = Path(lcfg.get("dir") or self.run_dir)
        timeout = float(lcfg.get("init_timeout", 15))
        try:
            import wandb

            if wdir.exists() and not wdir.is_dir():
                raise OSError(f"logger.dir={wdir} is not a directory")
            try:
                wdir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OSError(f"logger.dir={wdir} cannot be created: {exc.strerror}") from None
            if not os.access(wdir, os.W_OK | os.X_OK):
                raise OSError(f"logger.dir={wdir} is not writable")
            if mode == "online":
                # wandb.init would wait init_timeout for a server it cannot reach; an offline
                # run keeps the numbers for `wandb sync` instead of dropping them.
                base_url = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
                reason = unreachable(str(base_url), min(timeout, 3.0))
                if reason:
                    _warn(
                        f"W&B online but {reason}; logging offline to {wdir}/wandb instead "
                        "(upload later with wandb sync)"
                    )
                    mode = "offline"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.wandb_run = wandb.init(
                    project=str(lcfg.get("project") or "spt-cli"),
                    entity=lcfg.get("entity"),
                    group=group,
                    job_type=job_type,
                    name=name,
                    tags=list(lcfg.get("tags") or []),
                    config=config,
                    dir=str(wdir),
                    mode=mode,
                    reinit="finish_previous",
                    settings=wandb.Settings(
                        init_timeout=timeout,
                        silent=True,
                        console="off",
                        x_disable_stats=True,
                        disable_git=True,
                    ),
                )
            self.wandb_run.define_metric("search/step")
            self.wandb_run.define_metric("gates/*", step_metric="search/step")
            self.wandb_run.define_metric("search/*", step_metric="search/step")
            self.wandb_run.define_metric("train/step")
            self.wandb_run.define_metric("train/*", step_metric="train/step")
            self.wandb_run.define_metric("dev/*", step_metric="train/step")
        except Exception as exc:  # noqa: BLE001 - any W&B failure must not stop training
            self._wandb_failure("init", exc)

    def _wandb_failure(self, what: str, exc: BaseException) -> None:
        if not self._wandb_failed:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            _warn(
                f"W&B {what} failed ({reason}); continuing with local logs only "
                "(logger=none turns W&B off)"
            )
        self._wandb_failed = True
        self.wandb_run = None

    # -- logging ---------------------------------------------------------------------------
    def log(self, metrics: dict[str, float], *, step: int, phase: str) -> None:
        """Append one record (``{"phase", "step", **metrics}``) locally and send it to W&B."""
        record = {"phase": phase, "step": int(step), **{k: _num(v) for k, v in metrics.items()}}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # One write call per line keeps lines whole even if the process dies mid-run.
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            key = "search/step" if phase == "search" else "train/step"
            try:
                self.wandb_run.log({**metrics, key: int(step)})
            except Exception as exc:  # noqa: BLE001
                self._wandb_failure("log", exc)

    def summary(self, values: dict[str, Any]) -> None:
        """Put final values (selection, test metrics) in the W&B run summary."""
        if self.wandb_run is None:
            return
        try:
            for k, v in _flatten(values).items():
                self.wandb_run.summary[k] = v
        except Exception as exc:  # noqa: BLE001
            self._wandb_failure("summary", exc)

    def image(self, key: str, path: str | Path) -> None:
        """Attach an image file (e.g. gates.png) to the W&B run."""
        if self.wandb_run is None or not Path(path).exists():
            return
        try:
            import wandb

            self.wandb_run.log({key: wandb.Image(str(path))})
        except Exception as exc:  # noqa: BLE001
            self._wandb_failure("image upload", exc)

    def finish(self, exit_code: int = 0) -> None:
        """Close the W&B run; always called, also when the run fails."""
        if self.wandb_run is None:
            return
        try:
            self.wandb_run.finish(exit_code=exit_code)
        except Exception as exc:  # noqa: BLE001
            self._wandb_failure("finish", exc)
        self.wandb_run = None

    # -- resume ----------------------------------------------------------------------------
    def truncate_after(self, phase: str, step: int) -> None:
        """Drop records of ``phase`` logged after ``step`` (they are replayed on resume)."""
        records = read_metrics(self.path)
        keep = [r for r in records if not (r.get("phase") == phase and r.get("step", 0) > step)]
        text = "".join(json.dumps(r) + "\n" for r in keep)
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_metrics(path: str | Path) -> list[dict]:
    """Read ``metrics.jsonl``, ignoring a torn last line left by a killed process."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _num(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out
