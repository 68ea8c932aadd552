"""Readers on tiny fixtures in the public layouts, and on malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spt_cli.data import get_task
from spt_cli.data.readers import read_file, read_glue_tsv, read_lmbff_csv, read_superglue_jsonl
from spt_cli.errors import DataError

FIX = Path(__file__).parent / "fixtures" / "data"


def test_glue_tsv_stray_quote_and_blank_line():
    rows = read_glue_tsv(FIX / "glue/RTE/train.tsv", get_task("rte"), "rte/train/")
    assert len(rows) == 12  # quoting disabled: the unbalanced quote does not merge rows
    assert rows[3].text_a == 'He said "hello to train number 3.'
    assert rows[3].text_b == "Hypothesis 3."
    assert [r.label for r in rows[:2]] == [0, 1]  # entailment, not_entailment
    assert rows[4].uid == "rte/train/4"


def test_glue_tsv_bom_and_id_columns():
    rows = read_glue_tsv(FIX / "glue/MRPC/train.tsv", get_task("mrpc"))
    assert len(rows) == 8  # the BOM does not hide the 'Quality' column
    assert (rows[1].text_a, rows[1].text_b, rows[1].label) == ("Sentence 1 a.", "Sentence 1 b.", 1)
    assert rows[1].uid == "1001-2001"


def test_headerless_cola_and_missing_final_newline():
    task = get_task("cola")
    assert len(read_glue_tsv(FIX / "glue/CoLA/train.tsv", task)) == 8
    dev = read_glue_tsv(FIX / "glue/CoLA/dev.tsv", task)
    assert len(dev) == 4 and dev[-1].text_a == "Dev 3."


def test_crlf_mnli_and_regression_scores():
    mnli = read_glue_tsv(FIX / "glue/MNLI/train.tsv", get_task("mnli"))
    assert [r.label for r in mnli[:3]] == [0, 1, 2] and mnli[0].text_b == "H 0."
    stsb = read_glue_tsv(FIX / "glue/STS-B/train.tsv", get_task("stsb"))
    assert stsb[2].label == pytest.approx(1.2) and isinstance(stsb[2].label, float)


def test_lmbff_csv_quotes_empty_sentence_blank_line():
    rows = read_lmbff_csv(FIX / "original/mr/train.csv", get_task("mr"))
    assert len(rows) == 10  # blank line skipped, empty sentence kept (as LM-BFF keeps it)
    assert rows[0].text_a == "bad , really bad ."
    assert rows[2].text_a == "" and rows[2].label == 0
    assert rows[3].text_a == 'a "quoted" word'


def test_superglue_cb_wic_copa_boolq():
    cb = read_superglue_jsonl(FIX / "superglue/CB/train.jsonl", get_task("cb"))
    assert [r.label for r in cb[:3]] == [0, 1, 2] and cb[0].text_b == "Hypothesis 0"
    wic = read_superglue_jsonl(FIX / "superglue/WiC/train.jsonl", get_task("wic"))
    assert wic[1].label == 1 and wic[1].text_b == "bank"
    assert wic[1].text_a == "The bank 1. A river bank 1."
    copa = read_file(FIX / "superglue/COPA/val.jsonl", get_task("copa"))
    assert copa[0].text_a == "The man fell. What was the cause?"
    assert copa[0].text_b == "He slipped or He sang."
    boolq = read_file(FIX / "superglue/BoolQ/val.jsonl", get_task("boolq"))
    assert (boolq[1].text_a, boolq[1].text_b, boolq[1].label) == ("Passage 1.", "is it 1", 1)


def test_real_superglue_copa_if_mirror_present():
    path = Path(__file__).resolve().parents[2] / "shared/data/superglue/COPA/val.jsonl"
    if not path.is_file():
        pytest.skip("shared data mirror not present")
    assert len(read_file(path, get_task("copa"))) == 100


# --- malformed input: one-line DataError naming file and line ---------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_non_utf8_names_file_and_line(tmp_path):
    data = b"sentence\tlabel\ngood\t1\n" + "caf\xe9 au lait\t0\n".encode("latin-1")
    path = _write(tmp_path, "train.tsv", data)
    with pytest.raises(DataError, match=r"train\.tsv:3: byte 0xe9 is not valid UTF-8"):
        read_glue_tsv(path, get_task("sst2"))


def test_wrong_column_count(tmp_path):
    path = _write(tmp_path, "train.tsv", b"sentence\tlabel\ngood\t1\nbad\t0\textra\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: expected 2 columns, got 3"):
        read_glue_tsv(path, get_task("sst2"))


def test_label_outside_label_set(tmp_path):
    path = _write(tmp_path, "dev.tsv", b"index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"dev\.tsv:2: label 'maybe'.*entailment, not_entailment"):
        read_glue_tsv(path, get_task("rte"))
    csv_path = _write(tmp_path, "train.csv", b"0,ok\n7,bad\n")
    with pytest.raises(DataError, match=r"train\.csv:2: label '7'"):
        read_lmbff_csv(csv_path, get_task("mr"))


def test_missing_column_and_bad_score(tmp_path):
    path = _write(tmp_path, "train.tsv", b"sentence\tgold\nx\t1\n")
    with pytest.raises(DataError, match="missing column"):
        read_glue_tsv(path, get_task("sst2"))
    head = b"index\tsentence1\tsentence2\tscore\n"
    path = _write(tmp_path, "sts.tsv", head + b"0\ta\tb\thigh\n")
    with pytest.raises(DataError, match=r"sts\.tsv:2: score 'high'"):
        read_glue_tsv(path, get_task("stsb"))


def test_bad_json_line(tmp_path):
    good = json.dumps({"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 0})
    path = _write(tmp_path, "train.jsonl", f"{good}\n\n{{not json\n".encode())
    with pytest.raises(DataError, match=r"train\.jsonl:3: invalid JSON"):
        read_superglue_jsonl(path, get_task("cb"))
    path = _write(tmp_path, "val.jsonl", json.dumps({"premise": "p", "label": "yes"}).encode())
    with pytest.raises(DataError, match=r"val\.jsonl:1: missing field 'hypothesis'"):
        read_superglue_jsonl(path, get_task("cb"))


def test_csv_wrong_columns_and_missing_file(tmp_path):
    path = _write(tmp_path, "test.csv", b"0,fine\n1\n")
    with pytest.raises(DataError, match=r"test\.csv:2: expected 2 columns"):
        read_lmbff_csv(path, get_task("mr"))
    with pytest.raises(DataError, match=r"missing data file .*nope\.tsv"):
        read_file(tmp_path / "nope.tsv", get_task("rte"))


def test_errors_are_one_line(tmp_path):
    path = _write(tmp_path, "x.tsv", b"sentence\tlabel\na\t9\n")
    with pytest.raises(DataError) as info:
        read_glue_tsv(path, get_task("sst2"))
    assert "\n" not in str(info.value) and info.value.exit_code == 3
