"""Pieces every vizkit command shares: model options, the exit-code wrapper, the progress bar, the batch summary."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click


def _fail(message: str, code: int) -> None:
    click.echo(f"vizkit: error: {message}", err=True)
    sys.exit(code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not raise on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def errors_to_exit_codes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One clear line for user errors (exit 2), one line and a hint for internal errors (exit 1)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from vizkit.errors import VizkitError

        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # `vizkit models | head`: the reader left; stop quietly, as other tools do
            _silence_stdout()
            sys.exit(0)
        except VizkitError as err:
            _fail(str(err), err.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as err:  # turned into exit code 1 with the traceback under --debug
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


def frame_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--every and --max-frames, for commands that also take video files; gathered into ``frames``, a dict of
    ``VideoJob`` fields to pass on as ``**frames``."""
    command = fn

    @wraps(command)
    def gather(*args: Any, **kwargs: Any) -> Any:
        kwargs["frames"] = {"every": kwargs.pop("every"), "max_frames": kwargs.pop("max_frames")}
        return command(*args, **kwargs)

    fn = click.option("--max-frames", default=None, type=click.IntRange(min=1), metavar="N",
                      help="Videos: at most N frames (after --every). Default: all.")(gather)
    return click.option("--every", default=1, show_default=True, type=click.IntRange(min=1), metavar="N",
                        help="Videos (.mp4, .avi, .mov, ... read with OpenCV): use every N-th frame.")(fn)


MODEL_EXTRA = ("model_kwargs", "input_size", "mean", "std", "classes", "seed")


def _numbers(kind: type, count: int | None = None) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[Any, ...] | None:
        if value is None:
            return None
        try:
            values = tuple(kind(v) for v in value.replace(" ", "").split(","))
        except ValueError:
            raise click.BadParameter(f"'{value}' is not a comma-separated list of numbers") from None
        if count is not None and len(values) != count:
            raise click.BadParameter(f"'{value}' needs {count} comma-separated values")
        return values

    return parse


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, Any] | None:
    import json

    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not valid JSON: {err}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("give a JSON object of keyword arguments, e.g. '{\"width\": 32}'")
    return parsed


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--model, --weights, --download, --unsafe-pickle as their own arguments; the options for your own model and
    its input (--model-kwargs, --input-size, --mean, --std, --classes, --seed) gathered into ``model_extra``, a
    dict of ``ModelJob`` fields to pass on as ``**model_extra``."""

    command = fn

    @wraps(command)
    def gather(*args: Any, **kwargs: Any) -> Any:
        kwargs["model_extra"] = {k: kwargs.pop(k) for k in MODEL_EXTRA}
        return command(*args, **kwargs)

    fn = gather
    fn = click.option("--seed", default=0, show_default=True, type=int,
                      help="Seed of the random initialisation (--weights none, or your own model without "
                           "--weights): the same network on every run and in every command.")(fn)
    fn = click.option("--classes", default=None, metavar="FILE", type=click.Path(dir_okay=False),
                      help="Class names, one per line in output order (for a model without its own).")(fn)
    fn = click.option("--std", default=None, metavar="S,...", callback=_numbers(float),
                      help="Per-channel std of the input normalisation, comma-separated.")(fn)
    fn = click.option("--mean", default=None, metavar="M,...", callback=_numbers(float),
                      help="Per-channel mean of the input normalisation, comma-separated.")(fn)
    fn = click.option("--input-size", default=None, metavar="C,H,W", callback=_numbers(int, 3),
                      help="Input the model takes (square, H == W), e.g. 1,28,28; the image is resized to H.")(fn)
    fn = click.option("--model-kwargs", default=None, metavar="JSON", callback=_json_object,
                      help="Keyword arguments for your own model's NAME, as a JSON object.")(fn)
    fn = click.option("--unsafe-pickle", "allow_pickle", is_flag=True,
                      help="Load a fully pickled model file. This can execute arbitrary code: only for files you "
                           "trust.")(fn)
    fn = click.option("--download", "allow_download", is_flag=True,
                      help="Allow downloading missing pretrained weights (vizkit never downloads otherwise).")(fn)
    fn = click.option("--weights", "-w", default=None, metavar="W",
                      help="DEFAULT or a torchvision weights enum name (e.g. IMAGENET1K_V2), a state-dict file "
                           "(.pth/.pt/.safetensors), or 'none' for random init (seeded by --seed).")(fn)
    fn = click.option("--model", "-m", default=None, metavar="M",
                      help="torchvision name (resnet50), timm:NAME, lenet5, zfnet, mobilenet_v1, the offline "
                           "default efficientnet_lite0 (list: 'vizkit models'), or your own model as "
                           "path/to/file.py:NAME or package.module:NAME (NAME an nn.Module class or a function "
                           "returning one). A file given by path is executed: only for code you trust.")(fn)
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


class dataset_progress:
    """A progress bar over a dataset's images (``step(done, total)``) and a one-line note per skipped file
    (``skipped(path, reason)``); silent when stderr is not a terminal or ``show`` is False (torchrun ranks > 0)."""

    def __init__(self, show: bool = True) -> None:
        from tqdm import tqdm

        self.bar = tqdm(unit="image", file=sys.stderr, disable=None if show else True, leave=False)

    def __enter__(self) -> tuple[Callable[[int, int], None], Callable[[str, str], None]]:
        def step(done: int, total: int) -> None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)

        def skipped(path: str, reason: str) -> None:
            self.bar.clear()
            click.echo(f"vizkit: skipped {path}: {reason}", err=True)

        return step, skipped

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
