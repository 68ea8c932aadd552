"""Task heads: a trainable classifier, or label-word scores from the pretrained MLM/LM head.

``mlm`` (encoders) scores the verbalizer's label words at the template's mask position,
``lm`` (decoders) the next-token logits at ``label_pos`` (the position whose next token is
the label word). ``auto`` picks mlm/lm when the backbone has a pretrained LM head and the task
a verbalizer, else the classifier. Regression tasks use a one-output classifier with MSE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from spt_cli.config import as_dict, check_section, read_config_file
from spt_cli.errors import ConfigError


@dataclass
class TaskInfo:
    """What the model needs to know about a task (a subset of the data layer's TaskSpec)."""

    name: str
    num_labels: int
    label_words: list[str] | None = None
    is_regression: bool = False
    label_names: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TaskLike(Protocol):
    """The data layer's task spec, as far as the model reads it."""

    name: str
    label_names: Sequence[str]
    verbalizer: Sequence[str]
    is_regression: bool

    @property
    def num_labels(self) -> int: ...


def task_info(task: TaskInfo | TaskLike) -> TaskInfo:
    """A TaskInfo from the data layer's task spec (or a TaskInfo, returned as it is)."""
    if isinstance(task, TaskInfo):
        return task
    if not task.num_labels:
        raise ConfigError(f"task {task.name!r} names no labels; the model cannot size its head")
    return TaskInfo(
        name=str(task.name),
        num_labels=int(task.num_labels),
        label_words=list(task.verbalizer) or None,
        is_regression=bool(task.is_regression),
        label_names=list(task.label_names) or None,
    )


def head_settings(head_cfg: Any) -> dict[str, Any]:
    """``head_cfg`` over the defaults of ``conf/head/_base.yaml``; unknown keys refused,
    values checked by the ``head.*`` rows of ``config.RULES``."""
    base = as_dict(read_config_file("head", "_base"))
    given = as_dict(head_cfg)
    unknown = sorted(set(given) - set(base))
    if unknown:
        raise ConfigError(
            f"unknown head key(s) {', '.join(unknown)}; the keys are in conf/head/_base.yaml"
        )
    settings = {**base, **given}
    check_section("head", settings)
    return settings


def resolve_head(
    head_cfg: Mapping[str, Any], is_decoder: bool, has_lm_head: bool, task: TaskInfo, model: str
) -> str:
    """The concrete head name for a ``head/`` config."""
    name = head_cfg["name"]
    cloze = "lm" if is_decoder else "mlm"
    if name == "auto":
        usable = has_lm_head and bool(task.label_words) and not task.is_regression
        return cloze if usable else "classifier"
    if name in ("mlm", "lm"):
        if name != cloze:
            kind = "a decoder" if is_decoder else "an encoder"
            raise ConfigError(f"head={name} does not fit {model} ({kind}); use head={cloze}")
        if not has_lm_head:
            raise ConfigError(
                f"{model} has no pretrained LM head (has_lm_head: false); use head=classifier"
            )
        if task.is_regression or not task.label_words:
            raise ConfigError(
                f"head={name} needs label words, and task {task.name} has none "
                "(or is a regression); use head=classifier"
            )
    return name


def summary_index(mask: torch.Tensor, is_decoder: bool) -> torch.Tensor:
    """Index of each row's summary token: first real token (encoders), last real (decoders)."""
    mask = mask.to(torch.long)
    n = mask.shape[1]
    if is_decoder:
        return n - 1 - mask.flip(1).argmax(1)
    return mask.argmax(1)


class ClassifierHead(nn.Module):
    """Dropout + linear on a pooled text state: the summary token or the masked mean."""

    def __init__(
        self, dim: int, num_outputs: int, pooling: str, is_decoder: bool, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.pooling = ("last" if is_decoder else "first") if pooling == "auto" else pooling
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(dim, num_outputs)

    def rows(self, mask: torch.Tensor) -> torch.Tensor | None:
        """The one position per row the head reads ([B]), or None when it pools all of them."""
        if self.pooling == "mean":
            return None
        return summary_index(mask, self.pooling == "last")

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits from the pooled states [B, d]."""
        return self.linear(self.dropout(pooled))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            w = mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)
        else:
            idx = summary_index(mask, self.pooling == "last")
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]
        return self.classify(pooled)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool):
    if regression:
        return F.mse_loss(logits.view(-1), labels.to(logits.dtype).view(-1))
    return F.cross_entropy(logits, labels.long())


def label_word_ids(tokenizer: Any, task: TaskInfo | TaskLike) -> list[int]:
    """Token id of each label word: the data layer's rule for its task specs (single-token
    words, else an error), the first word piece for a bare TaskInfo (test models)."""
    if isinstance(task, TaskInfo):
        return _label_word_ids(tokenizer, task.label_words or [])
    from spt_cli.data.encode import label_word_ids as data_label_word_ids

    return [int(i) for i in data_label_word_ids(tokenizer, task)]


def _label_word_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    # Fallback: the first non-space token of " word" (the word follows a space in LM-BFF
    # templates; BPE vocabularies spell that with a leading-space marker).
    ids = []
    for word in words:
        pieces = tokenizer.encode(" " + word.strip(), add_special_tokens=False)
        pieces = [i for i in pieces if tokenizer.decode([i]).strip()] or pieces
        if not pieces:
            raise ConfigError(f"label word {word!r} is empty after tokenisation; fix the task spec")
        ids.append(int(pieces[0]))
    if len(set(ids)) != len(ids):
        raise ConfigError(
            f"label words {list(words)} map to the same token ids {ids}; choose distinct words"
        )
    return ids
