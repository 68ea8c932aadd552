"""A stage that trains several models over one Setup (controls, search.keep_best_of) tokenises
each split once per head."""

from __future__ import annotations

from omegaconf import OmegaConf

import spt_cli.data
from spt_cli.stages.common import Setup, encode_split


class _Rows:
    def __init__(self, rows):
        self.rows = rows

    def to_list(self):
        return [dict(r) for r in self.rows]


def test_encode_split_tokenises_a_split_once_per_head(monkeypatch) -> None:
    calls = []

    def fake_encode(examples, tokenizer, task, max_len, head):
        calls.append((len(examples), head, max_len))
        return _Rows([{"input_ids": [i], "labels": 0} for i in range(len(examples))])

    monkeypatch.setattr(spt_cli.data, "encode", fake_encode)
    cfg = OmegaConf.create({"data": {"max_seq_length": 16}})
    s = Setup(task="t", data=None, backbone=None, tokenizer=None)
    train, test = ["a", "b"], ["c"]
    first = encode_split(cfg, s, train, "classifier")
    assert encode_split(cfg, s, train, "classifier") is first
    assert encode_split(cfg, s, test, "classifier") == [{"input_ids": [0], "labels": 0}]
    encode_split(cfg, s, train, "mlm")  # another head is another encoding
    assert calls == [(2, "classifier", 16), (1, "classifier", 16), (2, "mlm", 16)]
    other = OmegaConf.create({"data": {"max_seq_length": 32}})
    encode_split(other, s, train, "classifier")
    assert calls[-1] == (2, "classifier", 32)
