"""What every per-image command shares: device choice, predictions, output folder names, the batch loop."""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vizkit.errors import ImageError, UserInputError, VizkitError
from vizkit.load import DEFAULT_MODEL, LoadedModel, load_model, sample_images
from vizkit.project.results import Prediction

log = logging.getLogger("vizkit")


@dataclass
class Failure:
    """One input the run could not use. ``skipped``: an input file that was unreadable and left out (what
    ``--allow-skipped`` forgives); False for any other problem with it."""

    image: str
    message: str
    exit_code: int
    skipped: bool = True


@dataclass
class JobReport:
    """What a batch run did. ``exit_code``: 0 all written, 2 some input was bad, 1 an internal error happened."""

    written: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if not self.failures:
            return 0
        return 1 if any(f.exit_code == 1 for f in self.failures) else 2

    def extend(self, other: JobReport) -> None:
        """Add another part of the same batch (e.g. the next group of images)."""
        self.written += other.written
        self.failures += other.failures


@dataclass(kw_only=True)
class ModelJob:
    """Options every command shares: the model and its weights, the device, where outputs go, the command line."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    out: str | Path = "vizkit-out"
    device: str = "auto"
    allow_pickle: bool = False  # --unsafe-pickle: a fully pickled model file can execute code
    allow_download: bool = False
    command: list[str] | str = field(default_factory=lambda: list(sys.argv))
    # Your own model (model="file.py:NAME" or "package.module:NAME") and input options (vizkit.load.models).
    model_kwargs: dict[str, Any] | None = None
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: str | Path | Sequence[str] | None = None
    seed: int = 0  # random init (weights "none") is seeded: every run and command sees the same network

    def load(self) -> LoadedModel:
        return load_model(self.model, self.weights, device=resolve_device(self.device),
                          allow_pickle=self.allow_pickle, allow_download=self.allow_download,
                          model_kwargs=self.model_kwargs, input_size=self.input_size, mean=self.mean, std=self.std,
                          classes=self.classes, seed=self.seed)


@dataclass(kw_only=True)
class ImageJob(ModelJob):
    """A command that runs on images; none given means the bundled sample photos."""

    images: Sequence[str | Path] = ()

    def image_paths(self) -> list[Path]:
        return [Path(p) for p in self.images] or sample_images()


@dataclass(frozen=True)
class Inputs:
    """A command's files split into still images and videos, each with its output folder name (the names are made
    unique over all the files together, so an image and a video of one stem do not share a folder)."""

    stills: list[Path]
    still_stems: list[str]
    videos: list[Path]
    video_stems: list[str]


@dataclass(kw_only=True)
class VideoJob(ImageJob):
    """An image command that also takes video files (a video extension, or a file Pillow cannot read that OpenCV
    opens with more than one frame): ``every`` and ``max_frames`` choose their frames (``vizkit.load.video``)."""

    every: int = 1
    max_frames: int | None = None

    def inputs(self) -> Inputs:
        """Split the files (no pixels are decoded); a frame selection that chooses nothing raises here."""
        from vizkit.load.video import check_selection, is_video

        check_selection(self.every, self.max_frames)
        paths = self.image_paths()
        stems = output_stems(paths)
        video = [is_video(p, probe=True) for p in paths]
        return Inputs([p for p, v in zip(paths, video, strict=True) if not v],
                      [s for s, v in zip(stems, video, strict=True) if not v],
                      [p for p, v in zip(paths, video, strict=True) if v],
                      [s for s, v in zip(stems, video, strict=True) if v])

    def run_videos(self, ctx: Any, inputs: Inputs, mode: str, progress: Callable[[str], None] | None = None,
                   **options: Any) -> JobReport:
        """``run_video`` on each video of ``inputs`` with ``ctx`` (the run's ``RunContext``); a bad video is
        reported and the batch goes on, as a bad image is."""
        if not inputs.videos:
            return JobReport()
        from vizkit.jobs.video_steps import run_video

        def work(path: Path, stem: str) -> Path:
            return run_video(ctx, path, mode, self.out, every=self.every, max_frames=self.max_frames, stem=stem,
                             **options).folder

        return for_each_image(inputs.videos, work, progress, stems=inputs.video_stems)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {device} requested but no CUDA device is available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise UserInputError(f"unknown device '{device}': {err}") from None


def predictions(logits: torch.Tensor, class_names: Sequence[str] | None, k: int = 5) -> list[Prediction]:
    """Top-k softmax predictions of one image's logits (1, classes), with class names when known."""
    probs = torch.softmax(logits.detach().float().reshape(1, -1)[0], dim=0)
    top = torch.topk(probs, min(k, probs.numel()))
    names = class_names or []
    return [Prediction(int(i), names[int(i)] if int(i) < len(names) else f"class {int(i)}", float(p))
            for p, i in zip(top.values, top.indices, strict=True)]


def output_stems(images: Sequence[Path]) -> list[str]:
    """Output folder names: the image stem, made unique when two images share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in images:
        stem = path.stem.lstrip(".") or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def for_each_image(images: Sequence[Path], work: Callable[[Path, str], Path],
                   progress: Callable[[str], None] | None = None, *, stems: Sequence[str] | None = None) -> JobReport:
    """Run ``work(image, stem) -> written folder`` on every image; a failing image is recorded and the batch
    goes on (user errors exit 2 at the end, anything else 1). ``stems``: the output folder names when ``images``
    is one part of a larger batch (default: ``output_stems(images)``)."""
    report = JobReport()
    for path, stem in zip(images, output_stems(images) if stems is None else stems, strict=True):
        try:
            report.written.append(work(path, stem))
        except VizkitError as err:
            report.failures.append(Failure(str(path), str(err), err.exit_code, isinstance(err, ImageError)))
        except Exception as err:  # one image's internal error must not lose the others
            log.debug("internal error on %s", path, exc_info=True)
            report.failures.append(Failure(str(path), f"internal error: {type(err).__name__}: {err}", 1, False))
        if progress:
            progress(str(path))
    return report
