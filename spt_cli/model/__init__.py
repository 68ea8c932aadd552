"""Model layer: backbones, the gated prompt module, heads, parameter table and artefacts."""

from spt_cli.backbones import load_backbone, make_adapter
from spt_cli.model.artifact import load_artifact, save_artifact
from spt_cli.model.build import build_model, build_model_from_cfg
from spt_cli.model.gated import GatedPromptModel
from spt_cli.model.heads import TaskInfo, task_info
from spt_cli.model.methods import MethodSpec, check_stage, resolve_method, retrain_method
from spt_cli.model.params import format_parameter_table, parameter_table

__all__ = [
    "GatedPromptModel",
    "MethodSpec",
    "TaskInfo",
    "build_model",
    "build_model_from_cfg",
    "check_stage",
    "format_parameter_table",
    "load_artifact",
    "load_backbone",
    "make_adapter",
    "parameter_table",
    "resolve_method",
    "retrain_method",
    "save_artifact",
    "task_info",
]
