"""``vizkit models``: the model names ``load_model`` knows (``vizkit.load.available_models``)."""
from __future__ import annotations

import click
from vizkit_cli.common import errors_to_exit_codes


@click.command()
@errors_to_exit_codes
def models() -> None:
    """List model names (timm models are used as timm:NAME)."""
    from vizkit.load import available_models

    for name in available_models():
        click.echo(name)
