"""One run's shared state, built once: the loaded model, its device and input shape, provenance and notes.

Every command starts with ``RunContext.from_job(config)`` (or ``RunContext.from_loaded(loaded)`` in a notebook)
and asks it for what each used to compute on its own: the device, the ``(1, C, H, W)`` input shape, the default
layers (one probe forward per run), the receptive fields, a preprocessed image, predictions, and the
``ReportInfo`` that page 1 and the manifest show. See docs/DESIGN.md, "Writing a new command".
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vizkit.capture.probe import model_device
from vizkit.load import LoadedModel, deprocess, load_image, preprocess
from vizkit.load.preprocessing import Preprocessing
from vizkit.project.results import Prediction

if TYPE_CHECKING:
    from vizkit.capture.receptive_field import ReceptiveField
    from vizkit.jobs.common import ModelJob
    from vizkit.outputs.info import ReportInfo

#: Every recorded unit below this magnitude: the weights are almost certainly untrained or broken.
TINY_ACTIVATION = 1e-6
#: A recorded array whose peak is below this share of another's: the signal vanished on its way through the layers,
#: as in a random network (trained ones keep their layers' scales within a few orders of magnitude).
TINY_RATIO = 1e-5
TINY_ACTIVATION_NOTE = (f"recorded activations are tiny (every unit below {TINY_ACTIVATION:g} in magnitude, or a "
                        f"layer's peak below {TINY_RATIO:g} of another's): the weights are almost certainly "
                        "untrained or broken")


def input_shape(loaded: LoadedModel | Preprocessing) -> tuple[int, int, int, int]:
    """The one place that turns the model's preprocessing (or a bare ``Preprocessing``) into the shape of one
    input image."""
    prep = loaded.preprocessing if isinstance(loaded, LoadedModel) else loaded
    return (1, prep.channels, prep.crop, prep.crop)


def tiny_activation_notes(arrays: Sequence[np.ndarray]) -> list[str]:
    """``[TINY_ACTIVATION_NOTE]`` when every value of every array (one per layer) is below ``TINY_ACTIVATION`` in
    magnitude, or when a nonzero array's peak is below ``TINY_RATIO`` of the largest peak (a random GoogLeNet: 0.7
    at conv1, 2e-11 at inception5b). An all-zero array says nothing about scale and is left out of the ratio."""
    peaks = [float(np.abs(a).max()) for a in arrays if np.size(a)]
    if not peaks:
        return []
    nonzero = [p for p in peaks if p > 0]
    vanished = bool(nonzero) and min(nonzero) < TINY_RATIO * max(nonzero)
    return [TINY_ACTIVATION_NOTE] if max(peaks) < TINY_ACTIVATION or vanished else []


@dataclass(kw_only=True)
class RunContext:
    """What one run of any command shares across its images. Build it with ``from_job`` or ``from_loaded``."""

    loaded: LoadedModel
    device: torch.device
    input_shape: tuple[int, int, int, int]
    command: list[str] | str = ""
    load_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # run-level notes shown on every page 1
    _default_layers: list[str] | None = field(default=None, init=False, repr=False)
    _receptive_fields: Mapping[str, ReceptiveField | None] | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, *, command: list[str] | str = "", load_seconds: float = 0.0
                    ) -> RunContext:
        return cls(loaded=loaded, device=model_device(loaded.model), input_shape=input_shape(loaded),
                   command=command, load_seconds=load_seconds)

    @classmethod
    def from_job(cls, job: ModelJob) -> RunContext:
        """Load the job's model (timed) and build the context; model errors raise here, before any image."""
        started = time.perf_counter()
        loaded = job.load()
        return cls.from_loaded(loaded, command=job.command, load_seconds=time.perf_counter() - started)

    @property
    def model(self) -> nn.Module:
        return self.loaded.model

    def default_layers(self) -> list[str]:
        """One layer per resolution stage (one probe forward, the first time only)."""
        if self._default_layers is None:
            from vizkit.capture.stages import default_layers

            self._default_layers = default_layers(self.model, self.input_shape)
        return list(self._default_layers)

    def deepest_layer(self) -> str:
        """The last default layer: the outermost module at the last spatial resolution (Grad-CAM's and
        occlusion's default), from the same probe."""
        layers = self.default_layers()
        if not layers:
            from vizkit.errors import ModelError

            raise ModelError(f"{type(self.model).__name__} has no spatial feature layer for input "
                             f"{self.input_shape}; pass a layer name (see 'vizkit layers')")
        return layers[-1]

    def layers(self, requested: Sequence[str] | None) -> list[str]:
        """The requested layers (duplicates dropped) or the default ones, checked to exist in the model."""
        from vizkit.capture.recorder import resolve_layers

        layers = list(dict.fromkeys(requested)) if requested else self.default_layers()
        resolve_layers(self.model, layers)
        return layers

    def spatial_layers(self, requested: Sequence[str] | None) -> list[str]:
        """Like ``layers``, refusing with one line a layer without a spatial map to project (a Linear layer, a
        global pool). Requested layers cost one forward on a blank input; default ones are spatial already."""
        layers = self.layers(requested)
        if not requested:
            return layers
        from vizkit.capture.recorder import Recorder
        from vizkit.capture.state import preserve_model_state
        from vizkit.errors import ModelError

        modules = dict(self.model.named_modules())
        blank = torch.zeros(self.input_shape, device=self.device)
        with preserve_model_state(self.model), torch.no_grad(), Recorder(self.model, layers, stop=True) as rec:
            rec.run(blank)
        for name in layers:
            shape = tuple(rec.outputs[name].shape)
            if len(shape) != 4 or (shape[2:] == (1, 1) and not isinstance(modules[name], nn.Conv2d)):
                raise ModelError(f"layer '{name}' gives shape {shape}, not a spatial (N, C, h, w) map to project; "
                                 "pick a convolutional layer before global pooling (see 'vizkit layers')")
        return layers

    def receptive_fields(self) -> Mapping[str, ReceptiveField | None]:
        """Receptive fields of every layer ({} when the graph cannot be analysed), computed once per run."""
        if self._receptive_fields is None:
            from vizkit.project.deconv import analyse_receptive_fields

            self._receptive_fields = analyse_receptive_fields(self.model, self.input_shape)
        return self._receptive_fields

    def input(self, image: str | Path) -> torch.Tensor:
        """Load and preprocess one image file: (1, C, H, W) on the model's device."""
        return preprocess(load_image(image), self.loaded.preprocessing).to(self.device)

    def inputs(self, images: Sequence[str | Path]) -> torch.Tensor:
        """A batch (N, C, H, W) of image files on the model's device (one bad file raises for the batch)."""
        return torch.cat([preprocess(load_image(p), self.loaded.preprocessing) for p in images]).to(self.device)

    def display(self, x: torch.Tensor) -> np.ndarray:
        """(H, W, 3) uint8 picture of one preprocessed input (1, C, H, W): what the model saw, de-normalised."""
        return deprocess(x.detach().cpu(), self.loaded.preprocessing)

    def predictions(self, logits: torch.Tensor, k: int = 5) -> list[Prediction]:
        from vizkit.jobs.common import predictions

        return predictions(logits, self.loaded.class_names, k)

    def info(self, image: str | Path | None, settings: dict) -> ReportInfo:
        """Provenance of one output folder: page 1 and the manifest. ``image`` None for model-level outputs."""
        from vizkit.outputs.info import ReportInfo

        loaded = self.loaded
        return ReportInfo(
            image_path=None if image is None else str(image), model=loaded.name, weights=loaded.weights,
            weights_sha256=loaded.weights_sha256, pretrained=loaded.pretrained,
            preprocessing=loaded.preprocessing.to_dict(), settings=settings, command=self.command,
            seed=getattr(loaded, "seed", None), checksum_match=getattr(loaded, "checksum_match", None),
            notes=list(self.notes))


__all__ = ["TINY_ACTIVATION", "TINY_ACTIVATION_NOTE", "TINY_RATIO", "RunContext", "input_shape", "model_device",
           "tiny_activation_notes"]
