"""Pieces every vizkit command shares: model options, the run frame (exit codes, --out check and lock, Ctrl-C,
progress), --allow-skipped, the batch summary."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
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


def main_rank() -> bool:
    """False on torchrun ranks > 0: they draw no progress bars and take no lock (rank 0 does, for the run)."""
    return os.environ.get("RANK", "0") == "0"


def _command_name() -> str:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return "vizkit"
    return " ".join(ctx.command_path.split()[1:]) or ctx.info_name or "vizkit"


def _interrupted(command: str, kwargs: dict[str, Any], started: float) -> None:
    """SIGINT: one line naming the checkpoint to resume from (a resumable command), then exit 130."""
    import shlex

    from vizkit.scan.checkpoint import saved_positions

    message = "vizkit: interrupted"
    out = kwargs.get("out")
    if out is not None and "resume" in kwargs:
        fresh = [p for p in sorted((Path(out) / command).glob("checkpoint*.pt"))
                 if kwargs.get("resume") or p.stat().st_mtime >= started - 1]
        if fresh:
            done = saved_positions(fresh[0])
            again = ("rerun the same torchrun command with --resume" if os.environ.get("WORLD_SIZE", "1") != "1"
                     else "continue with: " + shlex.join(["vizkit", *[a for a in sys.argv[1:] if a != "--resume"],
                                                          "--resume"]))
            after = f" after {done} images" if done is not None else ""
            message += f"; the scan state{after} is saved in {fresh[0]}; {again}"
        else:
            message += "; no checkpoint was saved (--checkpoint-every N saves one every N images for --resume)"
    click.echo(message, err=True)
    sys.exit(130)


def errors_to_exit_codes(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The frame of every command: one clear line for user errors (exit 2), one line and a hint for internal
    errors (exit 1), exit 130 on Ctrl-C. Before the command runs: its ``--out`` folder is checked (creatable,
    writable) and ``OUT/.<command>.lock`` taken (vizkit.outputs.lock), so a bad folder or a second run into the
    same folder fails in a second, before any model is loaded; and the progress reporter is made current."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import time
        from contextlib import ExitStack

        from vizkit.errors import VizkitError
        from vizkit.outputs.lock import claim_output
        from vizkit.outputs.progress import Progress, reporting

        started, command = time.time(), _command_name()
        try:
            with ExitStack() as stack:
                reporter = stack.enter_context(reporting(Progress(show=main_rank())))
                if kwargs.get("out") is not None:
                    for line in stack.enter_context(claim_output(kwargs["out"], command, lock=main_rank())):
                        reporter.note(f"vizkit: {line}")
                return fn(*args, **kwargs)
        except BrokenPipeError:  # `vizkit models | head`: the reader left; stop quietly, as other tools do
            _silence_stdout()
            sys.exit(0)
        except KeyboardInterrupt:
            _interrupted(command, kwargs, started)
        except VizkitError as err:
            _fail(str(err), err.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as err:  # turned into exit code 1 with the traceback under --debug
            logging.getLogger("vizkit").debug("internal error", exc_info=True)
            _fail(f"internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)", 1)

    return wrapper


def _allow_skipped(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta["vizkit.allow_skipped"] = value
    return value


def allow_skipped_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--allow-skipped: exit 0 when the only problem was input files skipped (the outputs were written)."""
    return click.option("--allow-skipped", is_flag=True, expose_value=False, callback=_allow_skipped,
                        help="Exit 0 when the only problem was unreadable input files, which were skipped and named "
                             "(default exit 2). torchrun needs it: it reports any non-zero exit as a crash.")(fn)


def exit_code(report: Any) -> int:
    """The report's exit code; 0 instead of 2 under --allow-skipped when something was written and every
    failure was a skipped input. Under torchrun a 2 for skipped files gets a line saying the outputs are fine."""
    code = int(report.exit_code)
    if code != 2 or not report.written or not all(f.exit_code == 2 and f.skipped for f in report.failures):
        return code
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().meta.get("vizkit.allow_skipped"):
        return 0
    if os.environ.get("WORLD_SIZE", "1") != "1":
        click.echo(f"vizkit: the outputs are complete; {len(report.failures)} input(s) were skipped, which exits 2 "
                   "and torchrun reports as a failure: pass --allow-skipped to exit 0", err=True)
    return code


def image_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """IMAGE... (default: the sample photos), --out and --device: the same on every per-image command."""
    fn = allow_skipped_option(fn)
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


def _skip_line(path: str, reason: str) -> str:
    """One line per skipped file, naming the path once (most reasons already name it)."""
    return f"vizkit: skipped: {reason}" if path in reason else f"vizkit: skipped {path}: {reason}"


class progress:
    """Images done of ``total`` on stderr (vizkit.outputs.progress): ``step(name)`` after each image."""

    def __init__(self, total: int, label: str | None = None) -> None:
        from vizkit.outputs.progress import task

        self.task = task(label or _command_name(), total, "images")

    def __enter__(self) -> Callable[[str], None]:
        def step(name: str) -> None:
            self.task.advance(1, detail=name[-40:])

        return step

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.task.__exit__(exc_type)  # a run that raised gets no summary line


class dataset_progress:
    """``(step, skipped)`` for dataset commands: the scan's own stream reports images/s and the ETA (as
    ``vizkit.scan.stream.DatasetStream`` does for every dataset command), so ``step`` does nothing here;
    ``skipped(path, reason)`` prints one line per unreadable file. ``show`` is kept for callers: the reporter knows
    the rank."""

    def __init__(self, show: bool = True) -> None:
        self.show = show

    def __enter__(self) -> tuple[Callable[[int, int], None], Callable[[str, str], None]]:
        from vizkit.outputs.progress import note

        def step(done: int, total: int) -> None:
            pass

        def skipped(path: str, reason: str) -> None:
            note(_skip_line(path, reason))

        return step, skipped

    def __exit__(self, *exc: object) -> None:
        pass


def finish(report: Any) -> None:
    """Print what a batch wrote and what failed (one line each), then exit with the report's code."""
    for folder in report.written:
        click.echo(f"wrote {folder}/")
    for failure in report.failures:
        click.echo(f"vizkit: error: {failure.image}: {failure.message}", err=True)
    if report.failures:
        click.echo(f"{len(report.written)} written, {len(report.failures)} failed", err=True)
    sys.exit(exit_code(report))
