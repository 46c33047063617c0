"""Pieces every vizkit command shares: model options, the exit-code wrapper, the progress bar, the batch summary."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click


def _fail(message: str, code: int) -> None:
    click.echo(f"vizkit: error: {message}", err=True)
    sys.exit(code)


def errors_to_exit_codes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One clear line for user errors (exit 2), one line and a hint for internal errors (exit 1)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from vizkit.errors import VizkitError

        try:
            return fn(*args, **kwargs)
        except VizkitError as err:
            _fail(str(err), err.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as err:  # noqa: BLE001 - turned into exit code 1 with the traceback under --debug
            logging.getLogger("vizkit").debug("internal error", exc_info=True)
            _fail(f"internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", 1)

    return wrapper


def image_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """IMAGE... (default: the sample photos), --out and --device: the same on every per-image command."""
    fn = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")(fn)
    fn = click.option("--out", "-o", default="vizkit-out", show_default=True, type=click.Path(file_okay=False),
                      help="Output folder; one subfolder per image.")(fn)
    # Folders are accepted here and reported per file by the batch (named, skipped, exit 2 at the end).
    return click.argument("images", nargs=-1, type=click.Path(path_type=str))(fn)


def stage_layers_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--layer", "-l", "layers", multiple=True, metavar="L",
                        help="Layer name from model.named_modules() (repeatable). Default: one per resolution "
                             "stage.")(fn)


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--unsafe-pickle", "allow_pickle", is_flag=True,
                      help="Load a fully pickled model file. This can execute arbitrary code: only for files you "
                           "trust.")(fn)
    fn = click.option("--download", "allow_download", is_flag=True,
                      help="Allow downloading missing pretrained weights (vizkit never downloads otherwise).")(fn)
    fn = click.option("--weights", "-w", default=None, metavar="W",
                      help="DEFAULT or a torchvision weights enum name (e.g. IMAGENET1K_V2), a state-dict file "
                           "(.pth/.pt/.safetensors), or 'none' for random init.")(fn)
    fn = click.option("--model", "-m", default=None, metavar="M",
                      help="torchvision name (resnet50), timm:NAME, lenet5, zfnet, mobilenet_v1, or the offline "
                           "default efficientnet_lite0. List: 'vizkit models'.")(fn)
    return fn


class progress:
    """A progress bar on stderr for multi-image runs (silent when stderr is not a terminal)."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="image", file=sys.stderr, disable=None, leave=False)

    def __enter__(self) -> Callable[[str], None]:
        def step(name: str) -> None:
            self.bar.set_postfix_str(name[-40:])
            self.bar.update(1)

        return step

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def finish(report: Any) -> None:
    """Print what a batch wrote and what failed (one line each), then exit with the report's code."""
    for folder in report.written:
        click.echo(f"wrote {folder}/")
    for failure in report.failures:
        click.echo(f"vizkit: error: {failure.image}: {failure.message}", err=True)
    if report.failures:
        click.echo(f"{len(report.written)} written, {len(report.failures)} failed", err=True)
    sys.exit(report.exit_code)
