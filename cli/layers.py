"""``vizkit layers``: the layer table of a model (``vizkit.capture.layer_table``)."""
from __future__ import annotations

from typing import Any

import click
from vizkit_cli.common import errors_to_exit_codes, model_options


@click.command()
@model_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@errors_to_exit_codes
def layers(model: str | None, weights: str | None, allow_download: bool, allow_pickle: bool, as_json: bool,
           model_extra: dict[str, Any]) -> None:
    """Every layer: name, type, output shape, parameters, MACs, receptive field, stride, switches."""
    from vizkit.capture.layer_table import layer_table
    from vizkit.jobs.context import input_shape
    from vizkit.load import DEFAULT_MODEL, load_model

    loaded = load_model(model or DEFAULT_MODEL, weights or "none", allow_pickle=allow_pickle,
                        allow_download=allow_download, **model_extra)
    table = layer_table(loaded.model, input_shape(loaded))
    click.echo(table.to_json() if as_json else table.format())
