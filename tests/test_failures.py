"""The failure catalogue: bad configuration, bad data, runtime failures, concurrency.

Every failure must give exactly one stderr line starting with ``error: `` that names the
problem and the fix (the last line, after any progress output), a non-zero exit code, no
Python traceback (``--debug`` / ``HYDRA_FULL_ERROR=1`` keep it), and no partial artefact
that looks complete (results.json, summary.json, selected_layers.json, artifact.json).

Errors found before Hydra starts (preflight) are checked in-process. Everything after that
runs through the console script; the independent commands run as one parallel batch (the
``batch`` fixture), so selecting a single batch test still runs the whole batch (1-3 min).
tests/test_cli.py holds the first entries of the catalogue (unknown stage, dataset, model,
method, head, logger, key; shots=abc, trainer.lr=-1); this file extends it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import SPT_RUN
from spt_cli import cli
from spt_cli.cli import main
from spt_cli.errors import RuntimeFailure
from spt_cli.files import write_json

TINY = ["model=tiny-bert", "dataset=rte", "shots=16"]
# A run that trains for 2 steps: the cheapest end-to-end job.
TINY_TRAIN = ["train", "method=prompt_tuning", *TINY, "trainer.max_steps=2", "trainer.eval_every=2"]
# Files whose presence says "this run finished"; a failed run must not leave one behind.
COMPLETE_MARKERS = {"results.json", "summary.json", "selected_layers.json", "artifact.json"}
# W&B "online" against TEST-NET-1 (RFC 5737, never routed): no network, deterministically,
# even on a machine that reaches the real server.
NO_NETWORK_WANDB = {
    "WANDB_MODE": "online",
    "WANDB_API_KEY": "f" * 40,
    "WANDB_BASE_URL": "http://192.0.2.1",
}


# -- helpers ---------------------------------------------------------------------------------
def cli_env(extra: dict[str, str | None] | None = None) -> dict[str, str]:
    """The console script's environment: W&B off, no full Hydra errors; ``None`` drops a key."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("HYDRA_FULL_ERROR", None)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def error_line(stderr: str) -> str:
    """The one ``error: `` line of a failed command: the last line, and no traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert lines[-1] == errors[0], stderr[-3000:]
    return errors[0]


def complete_markers(root: Path) -> list[Path]:
    """Files below ``root`` that mark a finished run, and atomic-write leftovers."""
    return [
        p
        for p in root.rglob("*")
        if p.name in COMPLETE_MARKERS or (p.name.startswith(".") and p.name.endswith(".tmp"))
    ]


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """``spt-run ARGS`` in-process (preflight errors only): (exit code, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code), capsys.readouterr().err


# -- the batch of console-script runs ---------------------------------------------------------
@dataclass
class Run:
    """One console-script command of the batch and, once done, its outcome."""

    args: list[str]
    env: dict[str, str | None] = field(default_factory=dict)
    python: str | None = None  # run `python -c CODE ARGS` instead of spt-run (patched writers)
    cwd: Path | None = None
    proc: subprocess.CompletedProcess | None = None
    seconds: float = 0.0

    @property
    def code(self) -> int:
        assert self.proc is not None
        return self.proc.returncode

    @property
    def stderr(self) -> str:
        assert self.proc is not None
        return self.proc.stderr

    @property
    def outputs(self) -> Path:
        assert self.cwd is not None
        return self.cwd / "outputs"


def _execute(run: Run) -> Run:
    assert run.cwd is not None
    cmd = (
        [SPT_RUN, *run.args]
        if run.python is None
        else [sys.executable, "-c", run.python, *run.args]
    )
    t0 = time.time()
    run.proc = subprocess.run(
        cmd, cwd=run.cwd, env=cli_env(run.env), capture_output=True, text=True, timeout=600
    )
    run.seconds = time.time() - t0
    return run


# A full disk while writing: half a file, then ENOSPC (through the atomic writer), or ENOSPC
# raised by a plain write (mapped by the CLI). Patched before spt_cli.stages is imported.
_ENOSPC_ATOMIC = """
import errno, os
import spt_cli.files as io
def write_json(path, obj):
    def half_then_full(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write('{"status": "comp')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    return io.atomic_write(path, half_then_full)
io.write_json = write_json
from spt_cli.cli import main
main()
"""
_ENOSPC_RAW = """
import errno, os
import spt_cli.files as io
def write_json(path, obj):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
io.write_json = write_json
from spt_cli.cli import main
main()
"""
# RunLogger with W&B online and no network: how long does it hold up a run?
_WANDB_TIMING = """
import json, sys, time
from omegaconf import OmegaConf
from spt_cli.runlog import RunLogger
t0 = time.time()
logger = RunLogger(sys.argv[1], OmegaConf.create({"name": "wandb", "init_timeout": 2}))
init = time.time() - t0
logger.log({"x": 1.0}, step=1, phase="train")
logger.finish()
print(json.dumps({"init_s": init, "total_s": time.time() - t0}))
"""

H = "index\tsentence1\tsentence2\tlabel\n"


def _rows(n: int, start: int = 0) -> str:
    labels = ("entailment", "not_entailment")
    return "".join(
        f"{start + i}\tPremise {i} .\tHypothesis {i} .\t{labels[i % 2]}\n" for i in range(n)
    )


# Small benchmark trees with one defect each (data.root=<tree>); line 7 is the bad row.
DATA_TREES: dict[str, dict[str, str | bytes]] = {
    "missing_split": {"glue/RTE/train.tsv": H + _rows(40)},
    "empty_file": {"glue/RTE/train.tsv": "", "glue/RTE/dev.tsv": H + _rows(10, 100)},
    "header_only": {"glue/RTE/train.tsv": H, "glue/RTE/dev.tsv": H + _rows(10, 100)},
    "malformed_row": {
        "glue/RTE/train.tsv": H + _rows(5) + "99\tonly two columns\n" + _rows(5, 50),
        "glue/RTE/dev.tsv": H + _rows(10, 100),
    },
    "bad_label": {
        "glue/RTE/train.tsv": H + _rows(5) + "99\ta\tb\tmaybe\n",
        "glue/RTE/dev.tsv": H + _rows(10, 100),
    },
    "non_utf8": {
        "glue/RTE/train.tsv": (H + _rows(5)).encode() + b"99\tcaf\xe9\tb\tentailment\n",
        "glue/RTE/dev.tsv": H + _rows(10, 100),
    },
    "bad_jsonl": {
        "superglue/CB/train.jsonl": '{"premise": "p", "hypothesis": "h", "label": "neutral"}\n'
        "{not json\n",
        "superglue/CB/val.jsonl": '{"premise": "p", "hypothesis": "h", "label": "neutral"}\n',
    },
    # User-supplied LM-BFF k-shot files: an id twice in train; ids 30, 31 in train and dev.
    "duplicate_ids": {
        "k-shot/RTE/16-13/train.tsv": H + _rows(32) + _rows(1),
        "k-shot/RTE/16-13/dev.tsv": H + _rows(32, 100),
    },
    "overlapping_ids": {
        "k-shot/RTE/16-13/train.tsv": H + _rows(32),
        "k-shot/RTE/16-13/dev.tsv": H + _rows(32, 30),
    },
}


def _write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def _batch_runs(base: Path) -> tuple[dict[str, Run], dict[str, Run]]:
    """(first wave, second wave): the second needs the first wave's ``shared`` run."""
    data = {name: _write_tree(base / "data" / name, files) for name, files in DATA_TREES.items()}
    no_hub = "data.hub=false"
    (base / "not_a_dir").write_text("a file where logger.dir expects a folder\n")
    incomplete = base / "incomplete_search"  # killed before it selected layers
    (incomplete / "checkpoints").mkdir(parents=True)
    (incomplete / "checkpoints" / "search.pt").write_bytes(b"")
    (incomplete / "metrics.jsonl").write_text('{"phase": "search", "step": 1}\n')
    corrupt = base / "corrupt_search"
    corrupt.mkdir()
    (corrupt / "selected_layers.json").write_text('{"layers": [1, ')
    retrain = ["retrain", *TINY, "trainer.max_steps=2", "logger=none"]
    # lr=1e30: the first step is finite, the weights it leaves overflow the next forward.
    nan = [
        "train", "method=prompt_tuning", *TINY, "trainer.max_steps=6", "trainer.eval_every=0",
        "trainer.checkpoint_every=1", "trainer.lr=1e30", "logger=none", "hydra.run.dir=nan_run",
    ]  # fmt: skip
    first = {
        "shared": Run(
            [*TINY_TRAIN, "logger=wandb", f"logger.dir={base / 'not_a_dir'}"],
            env={"WANDB_MODE": None},
        ),
        "wandb_online": Run(
            [*TINY_TRAIN, "logger=wandb", "logger.init_timeout=2"], env=NO_NETWORK_WANDB
        ),
        "nan_loss": Run(nan),
        "budget_too_large": Run(
            ["search", *TINY, "trainer.max_steps=2", "search.budget=99", "logger=none"]
        ),
        "layers_out_of_range": Run([*retrain, "layers=[99]"]),
        "shots_exceed_class": Run(["data", "dataset=trec", "shots=5000", "model=tiny-bert"]),
        "disk_full_atomic": Run(["data", *TINY], python=_ENOSPC_ATOMIC),
        "disk_full_raw": Run(["data", *TINY], python=_ENOSPC_RAW),
        "wandb_timing": Run(
            [str(base / "wandb_timing")], env=NO_NETWORK_WANDB, python=_WANDB_TIMING
        ),
        "missing_root": Run(["data", *TINY, f"data.root={base / 'no_such_data'}", no_hub]),
        "from_search_missing": Run([*retrain, f"from_search={base / 'no_such_run'}"]),
        "from_search_incomplete": Run([*retrain, f"from_search={incomplete}"]),
        "from_search_corrupt": Run([*retrain, f"from_search={corrupt}"]),
        "artifact_missing": Run(["eval", *TINY, f"artifact={base / 'no_such_run'}"]),
        "debug_traceback": Run(
            ["data", *TINY, f"data.root={base / 'no_such_data'}", no_hub],
            env={"HYDRA_FULL_ERROR": "1"},
        ),
    }
    for name, root in data.items():
        dataset = "dataset=cb" if name == "bad_jsonl" else "dataset=rte"
        shots = "shots=16" if "ids" in name else "shots=0"
        first[name] = Run(["data", "model=tiny-bert", dataset, shots, f"data.root={root}", no_hub])
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    concurrency = {
        "joblib_ok": Run(["data", "-m", "seed=13,21", *TINY, *joblib, "hydra.sweep.dir=sweep"]),
        "joblib_failed": Run(
            ["data", "-m", "data.root=/nonexistent/a,/nonexistent/b", *TINY, no_hub, *joblib]
        ),
    }
    second = {
        "artifact_other_backbone": Run(["eval", *TINY, "model=tiny-roberta", "logger=none"]),
    }
    return {**first, **concurrency}, second


def _two_at_once(cwd: Path, args: list[str]) -> list[Run]:
    """The same command twice in one working directory, started together."""
    procs = [
        subprocess.Popen(
            [SPT_RUN, *args],
            cwd=cwd,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        runs.append(Run(args, cwd=cwd, proc=done))
    return runs


@contextlib.contextmanager
def _running_until(cwd: Path, args: list[str], pattern: str):
    """An spt-run process, yielded once a file matching ``pattern`` exists below ``cwd``
    (killed on the way out if still running)."""
    proc = subprocess.Popen(
        [SPT_RUN, *args], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        t0 = time.time()
        while not list(cwd.glob(pattern)):
            if proc.poll() is not None or time.time() - t0 > 300:
                raise AssertionError(f"no {pattern}:\n{proc.stderr.read()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _sigint_scenario(cwd: Path) -> dict[str, Any]:
    """A long run; once it has a checkpoint, a second spt-run on the same directory (a resume
    while it still goes on), then Ctrl-C (SIGINT) to the first."""
    args = [
        "train", "method=prompt_tuning", *TINY, "trainer.max_steps=100000",
        "trainer.eval_every=0", "trainer.checkpoint_every=1", "logger=none", "hydra.run.dir=run",
    ]  # fmt: skip
    with _running_until(cwd, args, "run/checkpoints/train.pt") as proc:
        overrides_before = (cwd / "run" / ".hydra" / "overrides.yaml").read_text()
        second = subprocess.run(
            [SPT_RUN, *args, "resume=true"], cwd=cwd, env=cli_env(), capture_output=True,
            text=True,
        )  # fmt: skip
        overrides_after = (cwd / "run" / ".hydra" / "overrides.yaml").read_text()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    first = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return {
        "first": first,
        "second": second,
        "run": cwd / "run",
        "pid": proc.pid,
        "hydra_untouched": overrides_before == overrides_after,
    }


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict[str, Any]:
    """Every console-script run of the catalogue (name -> Run) and the SIGINT scenario
    ("sigint"), three at a time: ~2x faster than one after the other on 2 cores."""
    base = tmp_path_factory.mktemp("failures")
    first, second = _batch_runs(base)
    for name, run in {**first, **second}.items():
        if run.cwd is None:
            run.cwd = base / "cwd" / name
            run.cwd.mkdir(parents=True)
    for name in ("sigint", "same"):
        (base / "cwd" / name).mkdir()
    with ThreadPoolExecutor(max_workers=3) as pool:
        # Longest first, so that the pool ends evenly.
        futures: dict[str, Future] = {
            "sigint": pool.submit(_sigint_scenario, base / "cwd" / "sigint"),
            "same": pool.submit(_two_at_once, base / "cwd" / "same", ["data", *TINY]),
        }
        futures.update({name: pool.submit(_execute, run) for name, run in first.items()})
        shared = futures["shared"].result()
        run_dir = next(shared.outputs.glob("train/**/artifact")).parent
        second["artifact_other_backbone"].args.append(f"artifact={run_dir}/artifact")
        futures.update({name: pool.submit(_execute, run) for name, run in second.items()})
        done = {name: future.result() for name, future in futures.items()}
    timings = ", ".join(
        f"{name} {run.seconds:.1f}s" for name, run in done.items() if isinstance(run, Run)
    )
    print(f"\nfailure batch: {timings}")
    return done


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, pattern",
    [
        # Unknown choices inside a sweep, for every group (single values: test_cli.py).
        (
            ["search", "-m", "model=tiny-bert,bert-huge"],
            "unknown model 'bert-huge'; choose one of:",
        ),
        (["train", "-m", "method=lpt,magic"], "unknown method 'magic'; choose one of:"),
        (["search", "-m", "head=mlm,linear"], "unknown head 'linear'; choose one of: auto,"),
        (["search", "-m", "logger=none,tb"], "unknown logger 'tb'; choose one of: none, wandb"),
        (["search", "experiment=paper"], "unknown experiment 'paper'; choose one of: cpu_fewshot"),
        # Unknown keys: a top-level typo and a nested one.
        (["search", "shot=16"], "unknown config key 'shot'; check the spelling"),
        (["search", "search.budgett=2"], "unknown config key 'search.budgett'"),
        # Wrong types and ranges.
        (["search", "trainer.max_steps=abc"], "trainer.max_steps must be an integer, got 'abc'"),
        (["search", "seed=1.5"], "seed must be an integer, got 1.5; e.g. seed="),
        (["search", "trainer.lr=abc"], "trainer.lr must be a positive number, got 'abc'; e.g."),
        (["search", "trainer.lr=0"], "trainer.lr must be a positive number, got 0; e.g."),
        (["search", "shots=-1"], "shots must be >= 0, got -1; e.g. shots=0"),
        (["retrain", "layers=abc"], "layers must be a list of block indices, e.g. layers=[2,4]"),
        (["retrain", "layers=[1,x]"], "layers must be a list of block indices, e.g. layers=[2,4]"),
        (["search", "search.alpha_portion=1.5"], "search.alpha_portion must be in (0, 1)"),
        (["search", "data.max_seq_length=4"], "data.max_seq_length must be >= 8, got 4; e.g."),
        (["search", "trainer.max_steps=null"], "set trainer.max_steps or trainer.epochs"),
        # search.budget < 1 is caught before anything runs (> candidates: see the batch).
        (["search", "search.budget=0"], "search.budget must be >= 1, got 0; e.g. search.budget=1"),
        # resume=true with no run directory to continue.
        (["search", "resume=true"], "resume=true needs hydra.run.dir=<the run directory"),
    ],
)
def test_bad_config_is_one_line_exit_2_before_hydra(args, pattern, capsys, in_tmp):
    code, err = run_main(args, capsys)
    assert code == 2
    assert pattern in error_line(err)
    assert not (in_tmp / "outputs").exists()


def test_resume_on_a_directory_without_checkpoint(capsys, in_tmp):
    run = in_tmp / "old_run"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    code, err = run_main(["search", *TINY, "resume=true", f"hydra.run.dir={run}"], capsys)
    assert code == 2
    line = error_line(err)
    assert f"resume=true but {run} has no checkpoint" in line and "drop resume=true" in line
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "metrics.jsonl"]  # untouched


def test_debug_flag_keeps_the_traceback(monkeypatch, in_tmp):
    from spt_cli.errors import ConfigError

    monkeypatch.setattr(cli, "_DEBUG", False)  # main() sets it; undone after the test
    with pytest.raises(ConfigError, match="shots must be an integer"):
        main(["search", "shots=abc", "--debug"])
    assert not (in_tmp / "outputs").exists()


def test_debug_env_keeps_the_traceback_after_hydra(batch):
    run = batch["debug_traceback"]
    assert run.code != 0
    assert "Traceback" in run.stderr and "spt_cli.errors.DataError: no rte" in run.stderr


@pytest.mark.parametrize(
    "name, patterns",
    [
        (
            "budget_too_large",
            ["search.budget=99 must be between 1 and the 3 candidate layers [1, 2, 3]"],
        ),
        ("layers_out_of_range", ["layers=[99] is out of range for tiny-bert (blocks 0..3)"]),
        ("from_search_missing", ["no_such_run has no selected_layers.json", "point it at a"]),
        ("from_search_incomplete", ["incomplete_search has no selected_layers.json", "unfinished"]),
        ("from_search_corrupt", ["is not a valid selection file", "rerun the search"]),
        ("artifact_missing", ["holds no saved artefact (artifact.json)", "<run dir>/artifact"]),
        (
            "artifact_other_backbone",
            [
                "artifact was trained on backbone tiny-bert, not model=tiny-roberta",
                "model=tiny-bert",
            ],
        ),
    ],
)
def test_bad_config_after_hydra_is_one_line_exit_2(batch, name, patterns):
    run = batch[name]
    assert run.code == 2, run.stderr[-3000:]
    line = error_line(run.stderr)
    for pattern in patterns:
        assert pattern in line
    assert not run.outputs.exists()  # the failed run's directory is removed


def test_shots_larger_than_a_class(batch):
    run = batch["shots_exceed_class"]
    assert run.code == 3
    line = error_line(run.stderr)
    assert re.search(r"shots=5000 exceeds the \d+ examples of class '\w+' in trec", line), line
    assert line.endswith("lower shots")
    assert not run.outputs.exists()


# -- data ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, patterns",
    [
        ("missing_root", ["not a folder:", "no_such_data", "set data.root=PATH or SPT_DATA_DIR"]),
        ("missing_split", ["missing:", "glue/RTE/dev.tsv", "set data.root=PATH"]),
        ("empty_file", ["glue/RTE/train.tsv: empty file; expected a header line and rows"]),
        ("header_only", ["no train examples for rte", "add rows or point data.root"]),
        ("malformed_row", ["glue/RTE/train.tsv:7: expected 4 columns, got 2"]),
        ("bad_label", ["train.tsv:7: label 'maybe' is not a rte label", "fix the file"]),
        ("non_utf8", ["train.tsv:7: byte 0xe9 is not valid UTF-8; re-save the file as UTF-8"]),
        ("bad_jsonl", ["superglue/CB/train.jsonl:2: invalid JSON", "fix or remove the line"]),
        ("duplicate_ids", ["k-shot/RTE/16-13: duplicate id rte/train/0 in train", "remove"]),
        ("overlapping_ids", ["2 example(s) in both train and dev", "must be disjoint"]),
    ],
)
def test_bad_data_is_one_line_exit_3(batch, name, patterns):
    run = batch[name]
    assert run.code == 3, run.stderr[-3000:]
    line = error_line(run.stderr)
    for pattern in patterns:
        assert pattern in line, line
    assert not run.outputs.exists()


# -- runtime ------------------------------------------------------------------------------------
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(batch):
    run = batch["nan_loss"]
    assert run.code == 4, run.stderr[-3000:]
    line = error_line(run.stderr)
    m = re.search(
        r"non-finite loss \((nan|inf|-inf)\) at train step (\d+); last good checkpoint: "
        r"step (\d+) in (\S+); lower trainer.lr",
        line,
    )
    assert m, line
    bad_step, good_step, ckpt = int(m[2]), int(m[3]), Path(m[4])
    assert good_step == bad_step - 1  # trainer.checkpoint_every=1
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["step"] == good_step
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    run_dir = run.cwd / "nan_run"
    assert ckpt == run_dir / "checkpoints" / "train.pt"
    assert complete_markers(run_dir) == []


@pytest.fixture(scope="module")
def interrupted(batch) -> dict[str, Any]:
    """The SIGINT scenario of the batch."""
    return batch["sigint"]


def test_sigint_saves_a_checkpoint_and_exits_130(interrupted):
    first = interrupted["first"]
    assert first.returncode == 130
    line = error_line(first.stderr)
    run = interrupted["run"]
    m = re.search(r"interrupted at train step (\d+); checkpoint saved in (\S+);", line)
    assert m, line
    assert f"continue with the same command plus resume=true hydra.run.dir={run}" in line
    state = torch.load(m[2], map_location="cpu", weights_only=False)
    assert state["step"] == int(m[1])  # the checkpoint is of the step the message names
    assert complete_markers(run) == []


def test_sigterm_stops_a_sweep_and_keeps_the_checkpoint(tmp_path):
    """SIGTERM (a scheduler's stop) to a sweep: the running job checkpoints and the sweep
    exits 143 instead of starting its next job; nothing of the job is cleaned up."""
    args = [
        "train", "-m", "method=prompt_tuning", *TINY, "seed=1,2", "trainer.max_steps=100000",
        "trainer.eval_every=0", "trainer.checkpoint_every=1", "logger=none",
        "hydra.sweep.dir=sweep",
    ]  # fmt: skip
    with _running_until(tmp_path, args, "sweep/*/checkpoints/train.pt") as proc:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    line = error_line(err)
    assert re.search(r"stopped by SIGTERM at train step \d+; checkpoint saved in \S+;", line)
    jobs = [d.name for d in (tmp_path / "sweep").iterdir() if d.is_dir()]
    assert len(jobs) == 1 and jobs[0].startswith("0_"), jobs  # job 1 never started
    assert (tmp_path / "sweep" / jobs[0] / "checkpoints" / "train.pt").exists()
    assert not (tmp_path / "sweep" / jobs[0] / "failed.json").exists()


def test_second_run_on_a_busy_run_directory_is_refused(interrupted):
    second = interrupted["second"]
    assert second.returncode == 2
    line = error_line(second.stderr)
    assert f"is in use by another spt-run (pid {interrupted['pid']})" in line
    assert "choose another hydra.run.dir" in line
    assert interrupted["hydra_untouched"]  # refused before Hydra wrote its config there
    assert (interrupted["run"] / "checkpoints" / "train.pt").exists()  # nothing cleaned up


@pytest.mark.parametrize("sweep", [False, True], ids=["run_dir", "sweep_dir"])
def test_output_directory_under_a_file(sweep, capsys, in_tmp):
    """A read-only output location, simulated by a path below a regular file: as root, chmod
    does not stop writes, but no one can create a directory inside a file."""
    (in_tmp / "afile").write_text("")
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    args = ["data", *TINY, f"{key}=afile/run"] + (["-m", "seed=13,21"] if sweep else [])
    code, err = run_main(args, capsys)
    assert code == 4
    line = error_line(err)
    assert (
        f"cannot create the run directory afile/run: {in_tmp / 'afile'} is not a directory" in line
    )
    assert "choose a writable hydra.run.dir" in line
    assert (in_tmp / "afile").read_text() == "" and not (in_tmp / "outputs").exists()


def test_a_failed_run_removes_only_what_it_created(tmp_path):
    """A run that fails (missing data) removes its run directory and the parents it made, and
    nothing that was there before: not the user's empty folders, not their files."""
    env = cli_env()
    (tmp_path / "mine").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    (tmp_path / "outputs").mkdir()  # made by the user before the first run
    fail = ["data", *TINY, "data.root=/nonexistent", "data.hub=false"]
    for where in ("hydra.run.dir=mine/sub/run", "hydra.run.dir=notes", None):
        args = [*fail, where] if where else fail
        proc = subprocess.run([SPT_RUN, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True)  # fmt: skip
        assert proc.returncode == 3 and "not a folder: /nonexistent" in error_line(proc.stderr)
    assert list((tmp_path / "mine").iterdir()) == []  # mine/sub (the run's) removed, mine kept
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]  # no .hydra left
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert list((tmp_path / "outputs").iterdir()) == []  # outputs/data/... removed, outputs kept


def test_read_only_output_directory(capsys, in_tmp, monkeypatch):
    """A directory without write permission (for root, which ignores mode bits, the
    permission check is patched to answer as it would for any other user)."""
    ro = in_tmp / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    real_access = os.access
    monkeypatch.setattr(
        cli.os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode)
    )
    code, err = run_main(["data", *TINY, f"hydra.run.dir={ro}/run"], capsys)
    ro.chmod(0o755)
    assert code == 4
    assert f"{ro} is not writable; choose a writable hydra.run.dir" in error_line(err)
    assert list(ro.iterdir()) == []


def test_disk_full_in_the_writer_leaves_no_file(tmp_path, monkeypatch):
    """A full disk mid-write: a RuntimeFailure one-liner, and neither the file nor its
    temporary twin is left."""
    target = tmp_path / "run" / "results.json"

    def half_then_enospc(self: Path, text: str, *args, **kwargs) -> int:
        with open(self, "w", encoding="utf-8") as fh:
            fh.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", half_then_enospc)
    with pytest.raises(RuntimeFailure) as exc:
        write_json(target, {"status": "completed", "test": {"accuracy": 0.5}})
    message = str(exc.value)
    assert "\n" not in message and exc.value.exit_code == 4
    assert f"cannot write {target}: No space left on device; free disk space" in message
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize("name", ["disk_full_atomic", "disk_full_raw"])
def test_disk_full_during_a_run(batch, name):
    """End to end, with spt_cli.files.write_json patched (a full disk while writing
    summary.json): exit 4, one line, and the failed run directory removed."""
    run = batch[name]
    assert run.code == 4, run.stderr[-3000:]
    line = error_line(run.stderr)
    assert re.search(r"cannot write \S+summary\.json: No space left on device; free disk", line)
    assert not run.outputs.exists()


def test_wandb_directory_unwritable_warns_and_the_run_completes(batch):
    run = batch["shared"]
    assert run.code == 0, run.stderr[-3000:]
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: W&B")]
    assert len(warnings) == 1, run.stderr[-3000:]
    assert "not_a_dir is not a directory" in warnings[0] and "logger=none" in warnings[0]
    assert "error:" not in run.stderr
    (run_dir,) = [p.parent for p in run.outputs.glob("train/**/results.json")]
    for name in ("results.json", "metrics.jsonl", "artifact/artifact.json", ".hydra/config.yaml"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"


def test_wandb_online_without_network_logs_offline_and_completes(batch):
    run = batch["wandb_online"]
    assert run.code == 0, run.stderr[-3000:]
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: W&B")]
    assert len(warnings) == 1, run.stderr[-3000:]
    assert "W&B online but 192.0.2.1:80" in warnings[0] and "wandb sync" in warnings[0]
    (run_dir,) = [p.parent for p in run.outputs.glob("train/**/results.json")]
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == 2
    assert list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))  # kept for a later sync


def test_wandb_online_without_network_does_not_hang(batch):
    run = batch["wandb_timing"]
    assert run.code == 0, run.stderr[-3000:]
    timing = json.loads(run.proc.stdout.strip().splitlines()[-1])
    print(f"W&B online, no network: init {timing['init_s']:.2f}s, total {timing['total_s']:.2f}s")
    # The reachability probe waits min(init_timeout, 3 s), then the run goes on offline.
    assert timing["init_s"] < 10, timing


# -- concurrency --------------------------------------------------------------------------------
def test_two_identical_runs_at_once_get_distinct_directories(batch):
    runs = batch["same"]
    for run in runs:
        assert run.code == 0, run.stderr[-3000:]
    summaries = sorted(runs[0].outputs.glob("data/rte/16-13/*/summary.json"))
    assert len(summaries) == 2 and summaries[0].parent != summaries[1].parent
    # The lock file names the process that wrote each directory: one each.
    assert len({(p.parent / ".lock").read_text() for p in summaries}) == 2


def test_joblib_multirun_gives_every_job_its_own_directory(batch):
    run = batch["joblib_ok"]
    assert run.code == 0, run.stderr[-3000:]
    sweep = run.cwd / "sweep"
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0_rte_spt_16-13", "1_rte_spt_16-21"]
    assert sorted(p.name for p in sweep.iterdir() if p.is_file()) == ["multirun.yaml"]
    for job, seed in zip(jobs, (13, 21)):
        assert json.loads((job / "summary.json").read_text())["seed"] == seed
        assert f"seed={seed}" in (job / ".hydra" / "overrides.yaml").read_text()
    assert sorted(complete_markers(sweep)) == [j / "summary.json" for j in jobs]


def test_joblib_multirun_with_a_failed_job_exits_1(batch):
    """Jobs in worker processes: their failures still decide the exit code."""
    run = batch["joblib_failed"]
    assert run.code == 1
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 2 job(s) of the sweep failed: 0_rte_spt_16-13: no rte")
    assert len(list(run.outputs.glob("multirun/data/*/*/failed.json"))) == 2
    assert complete_markers(run.outputs) == []


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    write_json(target, {"status": "completed", "n": 1})

    def half_then_interrupt(self: Path, text: str, *args, **kwargs) -> int:
        with open(self, "w", encoding="utf-8") as fh:
            fh.write(text[: len(text) // 2])
        raise KeyboardInterrupt  # Ctrl-C (or any exception) half-way through the write

    monkeypatch.setattr(Path, "write_text", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_json(target, {"status": "completed", "n": 2, "padding": "x" * 1000})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"status": "completed", "n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_reader_never_sees_a_half_written_results_file(tmp_path):
    """A reader polling results.json while it is rewritten always parses a whole file."""
    target = tmp_path / "results.json"
    write_json(target, {"n": 0, "padding": "x" * 100_000})
    stop, seen, bad = threading.Event(), [], []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(json.loads(target.read_text())["n"])
            except json.JSONDecodeError as exc:
                bad.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(1, 100):
        write_json(target, {"n": n, "padding": "x" * 100_000})
    stop.set()
    thread.join()
    assert not bad and seen == sorted(seen) and len(seen) > 1


def test_table_never_reads_a_partial_run(batch, tmp_path):
    """`spt-run table` over a finished run and one killed while writing its results: the
    killed one is listed as incomplete, its half-written temporary file is never read."""
    from spt_cli.tables import collect_runs

    (done,) = [p.parent for p in batch["shared"].outputs.glob("train/**/results.json")]
    runs = tmp_path / "runs"
    shutil.copytree(done, runs / "done")
    killed = runs / "killed"
    shutil.copytree(done / ".hydra", killed / ".hydra")
    shutil.copytree(done / "checkpoints", killed / "checkpoints")
    text = (done / "results.json").read_text()
    (killed / ".results.json.abc123.tmp").write_text(text[: len(text) // 2])
    records = {r.path.name: r for r in collect_runs(runs)}
    assert set(records) == {"done", "killed"}
    assert records["done"].status == "completed"
    assert records["killed"].status == "incomplete" and records["killed"].test is None


# -- slow ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_during_retrain_then_resume_gives_identical_results(tmp_path):
    """Killed after the search finished, in the retrain phase: resume skips the finished
    search and continues the retrain (test_pipeline.py kills during the search)."""
    args = [
        "search", *TINY, "trainer.max_steps=4", "trainer.eval_every=2",
        "trainer.checkpoint_every=1", "logger=none",
    ]  # fmt: skip
    full = subprocess.run(
        [SPT_RUN, *args, "hydra.run.dir=full"], cwd=tmp_path, env=cli_env(), capture_output=True,
        text=True,
    )  # fmt: skip
    assert full.returncode == 0, full.stderr[-3000:]
    proc = subprocess.Popen(
        [SPT_RUN, *args, "hydra.run.dir=killed"], cwd=tmp_path, env=cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # The first retrain's checkpoint (search.keep_best_of: the last K's, retrain_last_k.pt)
    ckpts = tmp_path / "killed" / "checkpoints"
    t0 = time.time()
    while not list(ckpts.glob("retrain*.pt")):
        assert proc.poll() is None and time.time() - t0 < 600, "no retrain checkpoint"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "results.json").exists()
    assert (tmp_path / "killed" / "selected_layers.json").exists()
    resumed = subprocess.run(
        [SPT_RUN, *args, "hydra.run.dir=killed", "resume=true"], cwd=tmp_path, env=cli_env(),
        capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "[search] resumed: search already finished" in resumed.stderr
    assert re.search(r"\[retrain\w*\] resumed from step", resumed.stderr)
    want = json.loads((tmp_path / "full" / "results.json").read_text())
    got = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert got["selected_layers"] == want["selected_layers"]
    assert got["test"] == want["test"] and got["dev"] == want["dev"]


@pytest.mark.parametrize(
    "name, path", [("mpnet", "splitzip:no-such-model"), ("smollm2", "pkg:no_such_package")]
)
def test_optional_backbone_without_weights_names_its_setup_command(name, path):
    from spt_cli.backbones import load_backbone
    from spt_cli.errors import ConfigError
    from spt_cli.model.configs import model_config

    with pytest.raises(ConfigError) as err:
        load_backbone(model_config(name, path=path))
    message = str(err.value)
    assert "\n" not in message
    assert f"`SPT_MODELS={name} bash scripts/setup.sh`" in message
