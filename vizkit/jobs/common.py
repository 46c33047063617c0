"""What every per-image command shares: device choice, predictions, output folder names, the batch loop."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vizkit.errors import UserInputError, VizkitError
from vizkit.project.results import Prediction

log = logging.getLogger("vizkit")


@dataclass
class Failure:
    image: str
    message: str
    exit_code: int


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
            for p, i in zip(top.values, top.indices)]


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
                   progress: Callable[[str], None] | None = None) -> JobReport:
    """Run ``work(image, stem) -> written folder`` on every image; a failing image is recorded and the batch
    goes on (user errors exit 2 at the end, anything else 1)."""
    report = JobReport()
    for path, stem in zip(images, output_stems(images)):
        try:
            report.written.append(work(path, stem))
        except VizkitError as err:
            report.failures.append(Failure(str(path), str(err), err.exit_code))
        except Exception as err:  # noqa: BLE001 - one image's internal error must not lose the others
            log.debug("internal error on %s", path, exc_info=True)
            report.failures.append(Failure(str(path), f"internal error: {type(err).__name__}: {err}", 1))
        if progress:
            progress(str(path))
    return report
