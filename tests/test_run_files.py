"""The readers of a run directory's files: one per format, a one-line ConfigError naming the
problem and the fix when a file is missing or malformed."""

from __future__ import annotations

import json

import pytest

from spt_cli.errors import ConfigError
from spt_cli.model.artifact import find_artifact, read_artifact_config
from spt_cli.stages.selection import kept_layers, read_selection, searched_layers, write_selection


def test_selection_roundtrip(tmp_path):
    write_selection(tmp_path, {"layers": [3, 1], "probs": {"1": 0.9, "3": 0.8}})
    assert read_selection(tmp_path)["probs"] == {"1": 0.9, "3": 0.8}
    assert searched_layers(tmp_path) == [3, 1]


def test_retrain_from_search_says_when_the_search_kept_another_set(tmp_path, capsys):
    from omegaconf import OmegaConf

    from spt_cli.stages.train import resolve_retrain_layers

    write_selection(tmp_path, {"layers": [4, 5], "probs": {}})
    cfg = OmegaConf.create({"layers": None, "from_search": str(tmp_path)})
    assert kept_layers(tmp_path) is None  # retrain=false: no results.json
    assert resolve_retrain_layers(cfg) == [4, 5] and "kept" not in capsys.readouterr().err
    (tmp_path / "results.json").write_text(json.dumps({"selected_layers": [3]}))
    assert kept_layers(tmp_path) == [3]
    assert resolve_retrain_layers(cfg) == [4, 5]  # still the searched set ...
    assert "kept [3] on dev (search.keep_best_of): layers=[3]" in capsys.readouterr().err
    (tmp_path / "results.json").write_text(json.dumps({"selected_layers": [5, 4]}))
    assert resolve_retrain_layers(cfg) == [4, 5] and "kept" not in capsys.readouterr().err
    (tmp_path / "results.json").write_text("{not json")
    assert kept_layers(tmp_path) is None


def test_selection_missing(tmp_path):
    assert read_selection(tmp_path, missing_ok=True) is None  # a resumed search not yet done
    with pytest.raises(ConfigError, match="has no selected_layers.json .* finished spt-run search"):
        searched_layers(tmp_path)


@pytest.mark.parametrize("text", ['{"layers": [1, ', "[1, 2]", '{"probs": {}}', '{"layers": 3}'])
def test_selection_malformed(tmp_path, text):
    (tmp_path / "selected_layers.json").write_text(text)
    with pytest.raises(ConfigError, match="is not a valid selection file .*; rerun the search"):
        searched_layers(tmp_path)


def test_artifact_reader_takes_a_run_directory(tmp_path):
    art = tmp_path / "artifact"
    art.mkdir()
    (art / "artifact.json").write_text(json.dumps({"format": "spt-cli-artifact", "version": 1}))
    assert find_artifact(tmp_path) == art and find_artifact(art) == art
    assert read_artifact_config(tmp_path)["version"] == 1


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "holds no saved artefact \\(artifact.json\\); point it at <run dir>/artifact"),
        ("{not json", "is not valid JSON .*; re-save the artefact"),
        ("[1]", "is not a version-1 spt-cli-artifact file; re-save it"),
        ('{"format": "other"}', "is not a version-1 spt-cli-artifact file; re-save it"),
    ],
)
def test_artifact_reader_refuses(tmp_path, text, message):
    if text is not None:
        (tmp_path / "artifact.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_artifact_config(tmp_path)
