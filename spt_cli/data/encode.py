"""Tokenisation for the three heads, and batching.

- classifier: plain (pair) encoding, pairs truncated longest-first.
- mlm: the task's LM-BFF template rendered with the mask token, as one sequence. Like LM-BFF,
  each template part is tokenised on its own (parts after the first with a leading space, so
  BPE vocabularies see word starts) and only the text parts are truncated (longest first,
  from the end): the template words and the mask always survive. `mask_pos` is the mask's
  index in `input_ids`.
- lm (decoders such as GPT-2: no mask token, maybe no pad token): `task.lm_template`, which
  ends with `{mask}` (pair tasks put text_b before the label slot, e.g.
  "{a} Question: {b} ? Answer: {mask}"); the mask is dropped and `label_pos` is the index of
  the last token, whose next-token logits score the label words. Nothing follows it.
"""

from __future__ import annotations

import re
from typing import Any

from spt_cli.data.tasks import Example, TaskSpec, get_task
from spt_cli.errors import ConfigError

HEADS = ("classifier", "mlm", "lm")
_PLACEHOLDER = re.compile(r"(\{a\}|\{b\}|\{mask\})")


def pad_token_id(tokenizer: Any) -> int:
    """The padding id: pad, else eos (GPT-2 has no pad token), else 0."""
    for value in (tokenizer.pad_token_id, getattr(tokenizer, "eos_token_id", None)):
        if value is not None:
            return int(value)
    return 0


def _special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after one sequence ([CLS] / [SEP])."""
    content = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(content) + 1):
        if full[i : i + len(content)] == content:
            return list(full[:i]), list(full[i + len(content) :])
    return [], []


def _template_parts(template: str) -> list[str]:
    """ "{a} It was {mask} ." -> ["{a}", "It was", "{mask}", "."] (literals stripped)."""
    return [p.strip() for p in _PLACEHOLDER.split(template) if p.strip()]


def _adapt(parts: list[str], slot: str, texts: list[str]) -> list[str]:
    """LM-BFF's joins: a text followed by "?" loses its final punctuation ("sent-_0"), a text
    after "," starts lower-case ("sentl_1"), so "{a} ? {mask} , {b}" reads as one sentence."""
    if slot not in parts:
        return texts
    i = parts.index(slot)
    after = parts[i + 1] if i + 1 < len(parts) else ""
    before = parts[i - 1] if i > 0 else ""
    out = texts
    if after.startswith("?"):
        out = [t[:-1].rstrip() if t[-1:] in ".?!" else t for t in out]
    if before.endswith(","):
        out = [t[:1].lower() + t[1:] for t in out]
    return out


def render(
    task: TaskSpec | str, example: Example, mask_token: str = "<mask>", head: str = "mlm"
) -> str:
    """The text a head sees, as a string (for display; encoding works on token ids)."""
    spec = get_task(task)
    if head == "classifier":
        return example.text_a if example.text_b is None else f"{example.text_a} || {example.text_b}"
    template = spec.template if head == "mlm" else spec.lm_template
    parts = _template_parts(template)
    if head == "lm":
        parts = parts[: parts.index("{mask}") + 1]
    values = {
        "{a}": _adapt(parts, "{a}", [example.text_a])[0],
        "{b}": _adapt(parts, "{b}", [example.text_b or ""])[0],
        "{mask}": mask_token if head == "mlm" else "",
    }
    return " ".join(values.get(p, p) for p in parts if values.get(p, p))


def _tokenize(tokenizer: Any, texts: list[str], leading_space: bool) -> list[list[int]]:
    """Token ids without special tokens; empty texts give [] (a bare space would be a token
    for byte-level BPE)."""
    prefix = " " if leading_space else ""
    ids = tokenizer([prefix + t for t in texts], add_special_tokens=False)["input_ids"]
    return [list(row) if t.strip() else [] for row, t in zip(ids, texts)]


def _truncate(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Longest-first: drop the last token of the longer text until both fit in `budget`."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        if len(a) >= len(b):
            a.pop()
        else:
            b.pop()
    return a, b


def _encode_template(
    texts_a: list[str], texts_b: list[str], tokenizer: Any, task: TaskSpec, max_len: int, head: str
) -> dict[str, list]:
    parts = _template_parts(task.template if head == "mlm" else task.lm_template)
    if head == "lm":
        parts = parts[: parts.index("{mask}")]  # the label word is predicted after the end
        prefix, suffix = _special_tokens(tokenizer)
        suffix = []  # nothing may follow the label slot (e.g. a tokenizer's eos)
        mask_id = None
    else:
        if tokenizer.mask_token_id is None:
            raise ConfigError(
                "head=mlm needs a tokenizer with a mask token; use head=lm (decoders) "
                "or head=classifier"
            )
        mask_id = int(tokenizer.mask_token_id)
        prefix, suffix = _special_tokens(tokenizer)
    literal_ids = {
        (i, p): _tokenize(tokenizer, [p], leading_space=i > 0)[0]
        for i, p in enumerate(parts)
        if p not in ("{a}", "{b}", "{mask}")
    }
    fixed = len(prefix) + len(suffix) + sum(map(len, literal_ids.values())) + ("{mask}" in parts)
    budget = max_len - fixed
    if budget < 1:
        raise ConfigError(
            f"data.max_seq_length={max_len} is too small for the {task.name} template "
            f"({fixed} tokens without any text); raise data.max_seq_length"
        )
    pos = {p: i for i, p in enumerate(parts) if p in ("{a}", "{b}")}
    texts_a, texts_b = _adapt(parts, "{a}", texts_a), _adapt(parts, "{b}", texts_b)
    ids_a = _tokenize(tokenizer, texts_a, pos.get("{a}", 0) > 0)
    ids_b = _tokenize(tokenizer, texts_b, pos.get("{b}", 0) > 0) if "{b}" in pos else None
    out: dict[str, list] = {"input_ids": [], "attention_mask": []}
    out["mask_pos" if head == "mlm" else "label_pos"] = []
    for row in range(len(texts_a)):
        a, b = _truncate(ids_a[row], ids_b[row] if ids_b is not None else [], budget)
        ids, slot = list(prefix), -1
        for i, part in enumerate(parts):
            if part == "{a}":
                ids += a
            elif part == "{b}":
                ids += b
            elif part == "{mask}":
                slot = len(ids)
                ids.append(mask_id)
            else:
                ids += literal_ids[(i, part)]
        if head == "lm":
            slot = len(ids) - 1
        ids += suffix
        out["input_ids"].append(ids)
        out["attention_mask"].append([1] * len(ids))
        out["mask_pos" if head == "mlm" else "label_pos"].append(slot)
    if "token_type_ids" in tokenizer.model_input_names:
        out["token_type_ids"] = [[0] * len(ids) for ids in out["input_ids"]]
    return out


def encode(
    examples: list[Example],
    tokenizer: Any,
    task: TaskSpec | str,
    max_seq_length: int = 128,
    head: str = "classifier",
) -> Any:
    """Tokenise examples for `head` into a `datasets.Dataset` with input_ids, attention_mask,
    token_type_ids (when the tokenizer uses them), labels, and mask_pos (mlm) / label_pos (lm).
    """
    import datasets

    spec = get_task(task)
    if head not in HEADS:
        raise ConfigError(f"unknown head '{head}'; choose one of: {', '.join(HEADS)}")
    columns = {
        "text_a": [ex.text_a for ex in examples],
        "text_b": [ex.text_b or "" for ex in examples],
        "labels": [float(ex.label) if spec.is_regression else int(ex.label) for ex in examples],
    }
    features = datasets.Features(
        {
            "text_a": datasets.Value("string"),
            "text_b": datasets.Value("string"),
            "labels": datasets.Value("float32" if spec.is_regression else "int64"),
        }
    )
    ds = datasets.Dataset.from_dict(columns, features=features)
    pair = spec.is_pair

    def classifier(batch: dict[str, list]) -> dict[str, list]:
        second = batch["text_b"] if pair else None
        enc = tokenizer(
            batch["text_a"], second, truncation="longest_first", max_length=max_seq_length
        )
        return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}

    def templated(batch: dict[str, list]) -> dict[str, list]:
        return _encode_template(
            batch["text_a"], batch["text_b"], tokenizer, spec, max_seq_length, head
        )

    fn = classifier if head == "classifier" else templated
    # Progress bars only where they inform (large splits); restore the global setting after.
    quiet = len(ds) < 10_000 and not datasets.are_progress_bars_disabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        return ds.map(fn, batched=True, remove_columns=["text_a", "text_b"], desc="tokenize")
    finally:
        if quiet:
            datasets.enable_progress_bars()


def collate(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad a batch of encoded rows to its longest row; returns torch tensors.

    input_ids pad with `pad_token_id`, attention_mask and token_type_ids with 0; labels are
    float for regression (float values) and long otherwise; mask_pos/label_pos long.
    """
    import torch

    if not features:
        raise ValueError("collate needs at least one row")
    width = max(len(f["input_ids"]) for f in features)
    batch: dict[str, Any] = {}
    for key, fill in (("input_ids", pad_token_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in features[0]:
            rows = [list(f[key]) + [fill] * (width - len(f[key])) for f in features]
            batch[key] = torch.tensor(rows, dtype=torch.long)
    if "labels" in features[0]:
        labels = [f["labels"] for f in features]
        is_float = any(isinstance(v, float) for v in labels)
        batch["labels"] = torch.tensor(labels, dtype=torch.float if is_float else torch.long)
    for key in ("mask_pos", "label_pos"):
        if key in features[0]:
            batch[key] = torch.tensor([int(f[key]) for f in features], dtype=torch.long)
    return batch


def label_word_ids(tokenizer: Any, task: TaskSpec | str) -> list[int]:
    """One token id per verbalizer word, in label order (word with a leading space, as it
    follows a space in the template; BERT ignores the space, BPE marks the word start)."""
    spec = get_task(task)
    out = []
    for word in spec.verbalizer:
        ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = tokenizer.convert_ids_to_tokens(ids)
            raise ConfigError(
                f"label word '{word}' of {spec.name} is {len(ids)} tokens {pieces} for this "
                "tokenizer; cloze heads need single-token words (use head=classifier)"
            )
        out.append(int(ids[0]))
    return out
