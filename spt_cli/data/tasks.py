"""Task registry: one small spec per task (labels, files in each layout, metrics, template).

Label order follows the GLUE/SuperGLUE Hub datasets, so a Hub label index is our index.
Templates and label words follow LM-BFF (Gao et al., 2021) where it defines them; the
SuperGLUE ones follow PET/P-tuning in spirit. Every label word is a single token in the BERT
(uncased), RoBERTa and GPT-2 vocabularies (LM-BFF asserts this for RoBERTa/GPT-2 itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spt_cli.errors import ConfigError

# The sixteen canonical task names, in the order the docs and tables use.
CANONICAL: tuple[str, ...] = (
    "sst2", "mr", "mpqa", "subj", "trec", "mnli", "mrpc", "qnli", "qqp", "rte",
    "boolq", "cb", "wic", "copa", "cola", "stsb",
)  # fmt: skip


@dataclass(frozen=True)
class Example:
    """One normalised example. `label` is an index into `TaskSpec.label_names` (float for
    regression); `uid` is stable across runs (file id column or line number)."""

    text_a: str
    text_b: str | None
    label: int | float
    uid: str


@dataclass(frozen=True)
class TaskSpec:
    """Everything the data layer and heads need to know about one task.

    `label_names` are readable names in label-index order (empty for regression);
    `raw_labels` are the strings the files use for them (same order). `text_fields` are the
    GLUE TSV column names (or SuperGLUE JSON keys) of text_a/text_b. `template` has `{a}`,
    `{b}`, `{mask}`; `lm_template` is the decoder (GPT-2) variant that ends with `{mask}`.
    """

    name: str
    label_names: tuple[str, ...]
    text_fields: tuple[str, ...]
    metrics: tuple[str, ...]
    main_metric: str
    template: str
    verbalizer: tuple[str, ...]
    is_regression: bool = False
    test_splits: tuple[str, ...] = ("test",)
    raw_labels: tuple[str, ...] = ()
    lm_template: str = ""
    # Files in each layout (None: the layout has no copy of this task).
    glue: str | None = None  # glue/<glue>/ and k-shot/<glue>/ (TSV)
    label_field: str = "label"  # TSV label column
    id_fields: tuple[str, ...] = ()  # TSV id columns (uid); none -> line number
    tsv_columns: tuple[str, ...] = ()  # column names of a headerless TSV (CoLA)
    superglue: str | None = None  # superglue/<superglue>/{train,val}.jsonl
    fewglue: str | None = None  # fewglue/<fewglue>/{train,dev32}.jsonl
    original: str | None = None  # original/<original>/{train,test}.csv and k-shot/<original>/
    kshot_pool: str | None = None  # extra LM-BFF sampling pool (original/SST-2/train.tsv)
    hub: tuple[str, str] | None = None  # (Hub dataset, config)
    hub_fields: tuple[str, ...] = ()  # Hub text columns when they differ from text_fields

    def __post_init__(self) -> None:
        if not self.raw_labels:
            object.__setattr__(self, "raw_labels", self.label_names)
        if not self.lm_template:
            object.__setattr__(self, "lm_template", _default_lm_template(self.template))
        if not self.is_regression and len(self.verbalizer) != len(self.label_names):
            raise ValueError(f"{self.name}: one label word per label needed")
        if not self.lm_template.rstrip().endswith("{mask}"):
            raise ValueError(f"{self.name}: lm_template must end with {{mask}}")

    @property
    def num_labels(self) -> int:
        """Number of classes (1 for regression: one output)."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.text_fields) > 1


def _default_lm_template(template: str) -> str:
    """A decoder cannot look past the label word: keep the template up to {mask}.

    Only valid when nothing but punctuation follows the mask; pair templates with `{b}` after
    the mask define an explicit `lm_template` instead.
    """
    head, _, tail = template.partition("{mask}")
    if re.search(r"\{[ab]\}", tail):
        return "{a} Question: {b} ? Answer: {mask}"
    return head.rstrip() + " {mask}"


_BINARY_SENT = dict(
    label_names=("negative", "positive"),
    raw_labels=("0", "1"),
    metrics=("accuracy",),
    main_metric="accuracy",
    template="{a} It was {mask} .",
    verbalizer=("terrible", "great"),
)
_NLI_PAIR_LM = "{a} Question: {b} ? Answer: {mask}"
_PARA_LM = '{a} Question: Does it mean "{b}" ? Answer: {mask}'

_SPECS = [
    TaskSpec(
        name="sst2", text_fields=("sentence",), glue="SST-2", kshot_pool="original/SST-2/train.tsv",
        hub=("nyu-mll/glue", "sst2"), **_BINARY_SENT,
    ),
    TaskSpec(name="mr", text_fields=("sentence",), original="mr", **_BINARY_SENT),
    TaskSpec(name="cr", text_fields=("sentence",), original="cr", **_BINARY_SENT),
    TaskSpec(name="mpqa", text_fields=("sentence",), original="mpqa", **_BINARY_SENT),
    TaskSpec(
        name="subj", label_names=("subjective", "objective"), raw_labels=("0", "1"),
        text_fields=("sentence",), metrics=("accuracy",), main_metric="accuracy",
        template="{a} This is {mask} .", verbalizer=("subjective", "objective"), original="subj",
    ),
    TaskSpec(
        # LM-BFF's TREC ids: 0 DESC, 1 ENTY, 2 ABBR ("Expression"), 3 HUM, 4 LOC, 5 NUM.
        name="trec",
        label_names=("description", "entity", "abbreviation", "human", "location", "number"),
        raw_labels=("0", "1", "2", "3", "4", "5"), text_fields=("sentence",),
        metrics=("accuracy",), main_metric="accuracy", template="{mask} : {a}",
        lm_template="{a} The answer is about: {mask}",
        verbalizer=("Description", "Entity", "Expression", "Human", "Location", "Number"),
        original="trec",
    ),
    TaskSpec(
        name="mnli", label_names=("entailment", "neutral", "contradiction"),
        text_fields=("sentence1", "sentence2"), label_field="gold_label", id_fields=("index",),
        metrics=("accuracy",), main_metric="accuracy", template="{a} ? {mask} , {b}",
        lm_template=_NLI_PAIR_LM, verbalizer=("Yes", "Maybe", "No"),
        test_splits=("test_matched", "test_mismatched"), glue="MNLI",
        hub=("nyu-mll/glue", "mnli"), hub_fields=("premise", "hypothesis"),
    ),
    TaskSpec(
        name="mrpc", label_names=("not_equivalent", "equivalent"), raw_labels=("0", "1"),
        text_fields=("#1 String", "#2 String"), label_field="Quality", id_fields=("#1 ID", "#2 ID"),
        metrics=("accuracy", "f1", "acc_and_f1"), main_metric="acc_and_f1",
        template="{a} {mask} , {b}", lm_template=_PARA_LM,
        verbalizer=("No", "Yes"), glue="MRPC", hub=("nyu-mll/glue", "mrpc"),
        hub_fields=("sentence1", "sentence2"),
    ),
    TaskSpec(
        name="qnli", label_names=("entailment", "not_entailment"),
        text_fields=("question", "sentence"), id_fields=("index",), metrics=("accuracy",),
        main_metric="accuracy", template="{a} ? {mask} , {b}",
        lm_template=_NLI_PAIR_LM,
        verbalizer=("Yes", "No"), glue="QNLI", hub=("nyu-mll/glue", "qnli"),
    ),
    TaskSpec(
        name="qqp", label_names=("not_duplicate", "duplicate"), raw_labels=("0", "1"),
        text_fields=("question1", "question2"), label_field="is_duplicate", id_fields=("id",),
        metrics=("accuracy", "f1", "acc_and_f1"), main_metric="acc_and_f1",
        template="{a} {mask} , {b}", lm_template="{a} Question: Same as \"{b}\" ? Answer: {mask}",
        verbalizer=("No", "Yes"), glue="QQP", hub=("nyu-mll/glue", "qqp"),
    ),
    TaskSpec(
        name="rte", label_names=("entailment", "not_entailment"),
        text_fields=("sentence1", "sentence2"), id_fields=("index",), metrics=("accuracy",),
        main_metric="accuracy", template="{a} ? {mask} , {b}", lm_template=_NLI_PAIR_LM,
        verbalizer=("Yes", "No"), glue="RTE", superglue="RTE", hub=("nyu-mll/glue", "rte"),
    ),
    TaskSpec(
        name="boolq", label_names=("false", "true"), text_fields=("passage", "question"),
        metrics=("accuracy",), main_metric="accuracy",
        template="{a} Question: {b} ? Answer: {mask} .", verbalizer=("No", "Yes"),
        superglue="BoolQ", fewglue="BoolQ", hub=("aps/super_glue", "boolq"),
    ),
    TaskSpec(
        name="cb", label_names=("entailment", "contradiction", "neutral"),
        text_fields=("premise", "hypothesis"), metrics=("accuracy", "macro_f1"),
        main_metric="accuracy", template="{a} ? {mask} , {b}", lm_template=_NLI_PAIR_LM,
        verbalizer=("Yes", "No", "Maybe"), superglue="CB", fewglue="CB",
        hub=("aps/super_glue", "cb"),
    ),
    TaskSpec(
        # text_a = both sentences, text_b = the target word (see readers.superglue_example).
        name="wic", label_names=("false", "true"), text_fields=("sentence1", "sentence2", "word"),
        metrics=("accuracy",), main_metric="accuracy",
        template="{a} Does {b} mean the same in both ? {mask} .", verbalizer=("No", "Yes"),
        superglue="WiC", fewglue="WiC", hub=("aps/super_glue", "wic"),
    ),
    TaskSpec(
        # text_a = premise + "What was the cause/effect?", text_b = "choice1 or choice2".
        name="copa", label_names=("choice1", "choice2"), raw_labels=("0", "1"),
        text_fields=("premise", "choices"), metrics=("accuracy",), main_metric="accuracy",
        template="{a} {b} ? The {mask} .", lm_template="{a} {b} ? The {mask}",
        verbalizer=("first", "second"), superglue="COPA", fewglue="COPA",
        hub=("aps/super_glue", "copa"),
    ),
    TaskSpec(
        name="cola", label_names=("unacceptable", "acceptable"), raw_labels=("0", "1"),
        text_fields=("sentence",), tsv_columns=("source", "label", "original_label", "sentence"),
        metrics=("matthews", "accuracy"), main_metric="matthews", template="{a} This is {mask} .",
        verbalizer=("incorrect", "correct"), glue="CoLA", hub=("nyu-mll/glue", "cola"),
    ),
    TaskSpec(
        # Regression (0-5). LM-BFF scores it as p("Yes") between the two label words.
        name="stsb", label_names=(), text_fields=("sentence1", "sentence2"),
        label_field="score", id_fields=("index",), metrics=("pearson", "spearman", "corr"),
        main_metric="corr", template="{a} {mask} , {b}",
        lm_template=_PARA_LM,
        verbalizer=("No", "Yes"), is_regression=True, glue="STS-B",
        hub=("nyu-mll/glue", "stsb"),
    ),
]  # fmt: skip

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in _SPECS}

# Spellings people type; resolved silently to the canonical name.
_ALIASES = {
    "sst-2": "sst2",
    "sst_2": "sst2",
    "sts-b": "stsb",
    "sts_b": "stsb",
    "super_glue_rte": "rte",
}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The spec of a task by canonical name (case-insensitive); ConfigError lists the names."""
    if isinstance(name, TaskSpec):
        return name
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise ConfigError(f"unknown dataset '{name}'; choose one of: {', '.join(CANONICAL)}")
    return TASKS[key]
