"""`spt-run` front door: help, stage word, one-line errors before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spt_cli.cli import main

SPT_RUN = str(Path(sys.executable).with_name("spt-run"))


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_help_lists_stages_groups_and_choices(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for word in ("search", "retrain", "train", "eval", "table", "data"):
        assert f"  {word} " in out
    assert "dataset" in out and "rte" in out and "sst2" in out
    assert "method" in out and "prompt_tuning" in out and "spt_fixed" in out
    assert "tiny-bert" in out and "minilm" in out  # the tests' models, via $SPT_CONFIG_PATH


REAL_MODELS = "deberta-large, gpt2-large, minilm, mpnet, roberta-large, smollm2"


def test_users_are_offered_only_real_backbones(monkeypatch, capsys, in_tmp):
    from spt_cli.config import CONFIG_PATH_ENV, group_choices

    monkeypatch.delenv(CONFIG_PATH_ENV)
    assert ", ".join(group_choices("model")) == REAL_MODELS
    main(["--help"])
    assert "tiny" not in capsys.readouterr().out
    code, _, err = run_main(["search", "model=tiny-bert"], capsys)
    assert code == 2
    assert err.strip() == f"error: unknown model 'tiny-bert'; choose one of: {REAL_MODELS}"


def test_config_path_adds_a_folder_of_models(monkeypatch, tmp_path, capsys, in_tmp):
    from spt_cli.config import CONFIG_PATH_ENV, group_choices, read_config_file

    own = tmp_path / "mine"
    (own / "model").mkdir(parents=True)
    text = (Path(__file__).parent / "conf" / "model" / "tiny-bert.yaml").read_text()
    (own / "model" / "my-bert.yaml").write_text(text.replace("name: tiny-bert", "name: my-bert"))
    monkeypatch.setenv(CONFIG_PATH_ENV, str(own))
    assert "my-bert" in group_choices("model") and "tiny-bert" not in group_choices("model")
    assert read_config_file("model", "my-bert").family == "bert"
    main(["data", "model=my-bert", "--cfg", "job"])  # composed by Hydra from that folder
    assert "name: my-bert" in capsys.readouterr().out
    monkeypatch.setenv(CONFIG_PATH_ENV, str(tmp_path / "nowhere"))
    code, _, err = run_main(["search"], capsys)
    assert code == 2 and "SPT_CONFIG_PATH: " in err and "is not a folder" in err


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["serch"], "unknown stage 'serch'; choose one of: data, search"),
        (["search", "dataset=foo"], "unknown dataset 'foo'; choose one of: boolq, cb"),
        (["search", "model=bert-huge"], "unknown model 'bert-huge'; choose one of:"),
        (["train", "method=magic"], "unknown method 'magic'; choose one of:"),
        (["search", "head=linear"], "unknown head 'linear'; choose one of:"),
        (
            ["search", "logger=tensorboard"],
            "unknown logger 'tensorboard'; choose one of: none, wandb",
        ),
        (["search", "trainer.lrr=1"], "unknown config key 'trainer.lrr'"),
        (["search", "shots=abc"], "shots must be an integer, got 'abc'"),
        (["search", "trainer.lr=-1"], "trainer.lr must be a positive number, got -1"),
        (["search", "split=few_shot"], "split=few_shot needs shots=K"),
        (["search", "search.order=third"], "search.order=third is not known"),
        (["search", "search.hessian=exact"], "search.hessian=exact is not known"),
        (["train", "reuse=always"], "reuse=always is not known; use same_code | any | never"),
        (["search", "-m", "dataset=rte,nope"], "unknown dataset 'nope'"),
        # Every job of a sweep is checked before the first one runs.
        (["search", "-m", "seed=13,abc"], "sweep job 1 (seed=abc): seed must be an integer"),
        (
            ["search", "-m", "experiment=cpu_fewshot", "trainer.max_steps=5,0"],
            "sweep job 5 (experiment=cpu_fewshot trainer.max_steps=0 seed=13)",
        ),
        (["retrain", "layers=[]"], "layers=[] names no prompt layer, which is a head-only"),
        (["search", "stage=train"], "give the stage as the first word"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, pattern, capsys, in_tmp):
    code, out, err = run_main(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and pattern in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (in_tmp / "outputs").exists()


def test_console_script_error_has_no_traceback(in_tmp):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [SPT_RUN, "search", "dataset=nope"], capture_output=True, text=True, env=env, cwd=in_tmp
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown dataset 'nope'")
    assert "Traceback" not in proc.stderr
    assert not (in_tmp / "outputs").exists()
