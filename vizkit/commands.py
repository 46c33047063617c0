"""Every vizkit command in one table: its job module, the names ``vizkit.jobs`` exports from it, its result type,
and the render module and function that turn that result into files.

``vizkit.jobs`` derives its lazy exports from ``COMMANDS`` and ``SHARED``; ``vizkit.render.writer`` derives its
result -> document map from ``COMMANDS``. A new command is a job module, a render module, a CLI module and one row
here (docs/DESIGN.md, "Writing a new command"). This module holds only names, so any layer may read it.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["COMMANDS", "SHARED", "Command", "command_for_result", "job_exports"]


@dataclass(frozen=True)
class Command:
    """One CLI command. ``job``: module path of its job; ``exports``: the names ``vizkit.jobs`` exports from it;
    ``result``: the type name its job hands to the writer; ``render``: module path of its render module;
    ``document``: the function there that lists its files. Tools that write no files (``layers``, ``models``,
    ``lab``) leave ``result``, ``render`` and ``document`` empty."""

    name: str
    job: str = ""
    exports: tuple[str, ...] = ()
    result: str = ""
    render: str = ""
    document: str = ""


COMMANDS: tuple[Command, ...] = (
    Command("deconv", "vizkit.jobs.deconv",
            ("DeconvConfig", "deconv_image", "deconv_result", "deconv_tensor", "run_deconv"),
            "DeconvResult", "vizkit.render.deconv", "deconv_document"),
    Command("gradcam", "vizkit.jobs.gradcam", ("GradCamConfig", "gradcam_image", "gradcam_tensor", "run_gradcam"),
            "GradCamResult", "vizkit.render.gradcam", "gradcam_document"),
    Command("activations", "vizkit.jobs.activations",
            ("ActivationsConfig", "activations_image", "activations_tensor", "run_activations"),
            "ActivationsResult", "vizkit.render.activations", "activations_document"),
    Command("occlusion", "vizkit.jobs.occlusion",
            ("OcclusionConfig", "occlusion_image", "occlusion_tensor", "run_occlusion"),
            "OcclusionResult", "vizkit.render.occlusion", "occlusion_document"),
    Command("filters", "vizkit.jobs.filters", ("FiltersConfig", "run_filters"),
            "FiltersResult", "vizkit.render.filters", "filters_document"),
    Command("report", "vizkit.jobs.report", ("ReportConfig", "run_report"),
            "ReportResult", "vizkit.render.report", "report_document"),
    Command("mine", "vizkit.jobs.mine", ("MineConfig", "MineReport", "mine_dataset", "run_mine"),
            "MineOutput", "vizkit.render.mine", "mine_document"),
    Command("invariance", "vizkit.jobs.invariance",
            ("InvarianceConfig", "invariance_image", "invariance_tensor", "run_invariance"),
            "InvarianceResult", "vizkit.render.invariance", "invariance_document"),
    Command("evolve", "vizkit.jobs.evolve", ("EvolveConfig", "evolve_checkpoints", "run_evolve"),
            "EvolveResult", "vizkit.render.evolve", "evolve_document"),
    Command("shortcuts", "vizkit.jobs.shortcuts", ("ShortcutsConfig", "ShortcutsReport", "run_shortcuts",
                                                   "shortcuts_result"),
            "ShortcutsResult", "vizkit.render.shortcuts", "shortcuts_document"),
    Command("attribute", "vizkit.jobs.attribute",
            ("AttributeConfig", "attribute_image", "attribute_tensor", "run_attribute"),
            "AttributeResult", "vizkit.render.attribute", "attribute_document"),
    Command("dream", "vizkit.jobs.dream", ("DreamConfig", "dream_tensor", "run_dream"),
            "DreamResult", "vizkit.render.dream", "dream_document"),
    Command("layers"),
    Command("models"),
    Command("lab"),
)

#: What every command shares, exported by ``vizkit.jobs`` too: module path -> names.
SHARED: dict[str, tuple[str, ...]] = {
    "vizkit.jobs.common": ("Failure", "ImageJob", "JobReport", "ModelJob", "for_each_image", "predictions",
                           "resolve_device"),
    "vizkit.jobs.context": ("RunContext", "input_shape", "model_device", "tiny_activation_notes"),
}


def job_exports() -> dict[str, str]:
    """Public name of ``vizkit.jobs`` -> the module that defines it."""
    exports = {name: module for module, names in SHARED.items() for name in names}
    for command in COMMANDS:
        exports.update(dict.fromkeys(command.exports, command.job))
    return exports


def command_for_result(type_names: list[str]) -> Command | None:
    """The command whose result type is the first of ``type_names`` (a result class's MRO, by name) with a row."""
    by_result = {c.result: c for c in COMMANDS if c.result}
    return next((by_result[name] for name in type_names if name in by_result), None)
