"""The ``vizkit`` command: a thin click layer over ``vizkit.jobs`` and the library; one module per command.

Exit codes: 0 success; 2 bad input or usage (unreadable image, unknown model/layer, missing weights; in a batch,
after all other images were processed); 1 internal error.
"""
from __future__ import annotations

import importlib
import logging

import click

from vizkit.commands import COMMANDS


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(package_name="vizkit")
def main(debug: bool) -> None:
    """See what a trained convolutional network learned."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(message)s")


# One CLI module per command, named after it (cli/<name>.py defines the click command <name>): the rows of
# vizkit.commands list them, so a new command adds its row there and nothing here.
for row in COMMANDS:
    main.add_command(getattr(importlib.import_module(f"vizkit_cli.{row.name}"), row.name))

if __name__ == "__main__":
    main()
