"""The attribution methods ``attribute`` knows: who computes each, and what its sign means.

``library`` says where the math lives: ``captum`` (Captum computes it; vizkit only wires targets, baselines and
batches), ``zennit`` (zennit's rules and composites), ``vizkit`` (vizkit's own rules and CAM base). ``signed``
tells a renderer whether to use a diverging colour map: a positive value argues for the target and a negative one
against it (gradient x input, IG, DeepLift, LRP ...); unsigned maps (absolute gradients, ReLU-ed CAMs) are
magnitudes only. ``cam`` methods return one channel, ``(N, 1, H, W)``, upsampled from the layer; the others return
the input's channels, ``(N, C, H, W)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MethodInfo:
    name: str
    library: str
    signed: bool
    summary: str
    baseline: bool = False  # uses ``baseline=``
    cam: bool = False  # needs ``layer=``; (N, 1, H, W) output
    random: bool = False  # draws random numbers (seed torch for reproducible maps)
    audited: tuple[str, ...] = ()  # model defects that make the wrapped library silently wrong (see audit.py)


METHODS: dict[str, MethodInfo] = {m.name: m for m in (
    MethodInfo("saliency", "captum", False, "|d target / d input| (Simonyan et al. 2014)"),
    MethodInfo("gradient-x-input", "captum", True, "input * d target / d input"),
    MethodInfo("integrated-gradients", "captum", True, "path integral of gradients from the baseline (Sundararajan "
               "et al. 2017); sums to f(x) - f(baseline)", baseline=True),
    MethodInfo("smoothgrad", "captum", False, "noise tunnel: a base method averaged over noisy copies (Smilkov et "
               "al. 2017); signed when the base method is", random=True),
    MethodInfo("deeplift", "captum", True, "DeepLIFT rescale rule against the baseline (Shrikumar et al. 2017)",
               baseline=True, audited=("functional", "reused")),
    MethodInfo("gradient-shap", "captum", True, "expected gradients over random points between baseline and input",
               baseline=True, random=True),
    MethodInfo("occlusion", "captum", True, "drop in the target when a window is replaced by the baseline (Zeiler "
               "and Fergus 2014)", baseline=True),
    MethodInfo("lrp", "zennit", True, "layer-wise relevance propagation with a named zennit composite (Bach et al. "
               "2015)", audited=("functional-smooth", "reused-parameters")),
    MethodInfo("gradcam", "vizkit", False, "relu(sum_c mean(dy/dA_c) A_c) (Selvaraju et al. 2017)", cam=True),
    MethodInfo("gradcam++", "vizkit", False, "Grad-CAM with pixel-weighted positive gradients (Chattopadhay et al. "
               "2018)", cam=True),
    MethodInfo("score-cam", "vizkit", False, "channels weighted by softmax of the target on the input masked by each "
               "upsampled channel (Wang et al. 2020)", cam=True),
    MethodInfo("eigen-cam", "vizkit", False, "first principal component of the layer's maps; ignores the target "
               "(Muhammad and Yeasin 2020)", cam=True),
    MethodInfo("guided-backprop", "vizkit", True, "gradient with every rectifier passing relu(gradient) "
               "(Springenberg et al. 2015); vizkit's rules see functional and in-place activations"),
    MethodInfo("deconvnet", "vizkit", True, "the target's score projected with the deconvnet rule relu(signal) "
               "(Zeiler and Fergus 2014); vizkit's rules"),
)}

# Base methods a noise tunnel can wrap (Captum's NoiseTunnel needs a Captum attribution).
SMOOTHABLE = ("saliency", "gradient-x-input", "integrated-gradients", "deeplift", "gradient-shap")


def method_info(name: str) -> MethodInfo:
    from vizkit.errors import UserInputError, close_matches

    if name not in METHODS:
        raise UserInputError(f"unknown attribution method '{name}'.{close_matches(name, list(METHODS))} "
                             f"Choose from: {', '.join(METHODS)}")
    return METHODS[name]


def is_signed(method: str, base: str = "saliency") -> bool:
    """Whether the map's sign means something (a noise tunnel inherits its base method's)."""
    return METHODS[base].signed if method == "smoothgrad" else method_info(method).signed


@dataclass(frozen=True)
class MethodSpec:
    """One method as the user names it: ``label`` (``lrp:epsilon-alpha2-beta1``) keys its outputs; ``method`` is
    the ``METHODS`` name; ``option`` the LRP composite or the noise tunnel's base method (None: the default);
    ``optional``: expanded from ``all``, so a model the method would be wrong on skips it instead of failing."""

    label: str
    method: str
    option: str | None = None
    optional: bool = False

    @property
    def options(self) -> dict[str, Any]:
        """``attribute``'s keyword for the option."""
        if self.option is None:
            return {}
        return {"composite": self.option} if self.method == "lrp" else {"base": self.option}

    @property
    def audited(self) -> list[str]:
        """The ``METHODS`` names whose library hooks run for this spec (a noise tunnel's base included) and that
        ``audit.py`` must clear on the model."""
        names = [self.method] + ([self.option] if self.method == "smoothgrad" and self.option else [])
        return [n for n in names if METHODS[n].audited]

    @property
    def signed(self) -> bool:
        return is_signed(self.method, self.option or "saliency") if self.method == "smoothgrad" else \
            METHODS[self.method].signed


def parse_method(spec: str, optional: bool = False) -> MethodSpec:
    """``M`` or ``M:OPTION`` (``lrp:COMPOSITE``, ``smoothgrad:BASE``), checked; a one-line error names the fix."""
    from vizkit.errors import UserInputError
    from vizkit.project.attribute.lrp import COMPOSITES

    name, _, option = spec.strip().partition(":")
    method_info(name)
    if not option:
        return MethodSpec(name, name, None, optional)
    choices = {"lrp": COMPOSITES, "smoothgrad": SMOOTHABLE}.get(name)
    if choices is None:
        raise UserInputError(f"method '{spec}': only lrp (a composite) and smoothgrad (a base method) take "
                             "':OPTION'")
    if option not in choices:
        raise UserInputError(f"method '{spec}': unknown {'composite' if name == 'lrp' else 'base method'} "
                             f"'{option}'; choose from {', '.join(choices)}")
    return MethodSpec(f"{name}:{option}", name, option, optional)


def parse_methods(specs: Sequence[str]) -> list[MethodSpec]:
    """Every spec parsed once, duplicates dropped; ``all`` stands for every method with its defaults."""
    parsed: dict[str, MethodSpec] = {}
    for spec in specs:
        every = spec.strip() == "all"
        for one in [parse_method(m, optional=True) for m in METHODS] if every else [parse_method(spec)]:
            parsed.setdefault(one.label, one)
    if not parsed:
        from vizkit.errors import UserInputError

        raise UserInputError("no attribution method given; name one with --method (e.g. integrated-gradients)")
    return list(parsed.values())


__all__ = ["METHODS", "SMOOTHABLE", "MethodInfo", "MethodSpec", "is_signed", "method_info", "parse_method",
           "parse_methods"]
