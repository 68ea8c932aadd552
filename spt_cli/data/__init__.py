"""Data layer: task specs, readers for the benchmark layouts, the split protocol, encoding."""

from spt_cli.data.encode import collate, encode, label_word_ids, pad_token_id, render
from spt_cli.data.splits import TaskData, load_task_data
from spt_cli.data.tasks import CANONICAL, TASKS, Example, TaskSpec, get_task

__all__ = [
    "CANONICAL",
    "TASKS",
    "Example",
    "TaskData",
    "TaskSpec",
    "collate",
    "encode",
    "get_task",
    "label_word_ids",
    "load_task_data",
    "pad_token_id",
    "render",
]
