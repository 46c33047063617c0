"""Load models and images: ``load_model`` (torchvision, timm, zoo, the offline default), ``load_image``,
``preprocess``/``deprocess`` and the sample photos. Naming and weights rules: ``vizkit.load.models``."""
from __future__ import annotations

from vizkit.load.dataset import ImageBatch, ImageDataset, ImageList, list_images
from vizkit.load.images import load_image, sample_images
from vizkit.load.models import DEFAULT_MODEL, LoadedModel, available_models, imagenet_categories, load_model
from vizkit.load.preprocessing import Preprocessing, deprocess, preprocess

__all__ = [
    "DEFAULT_MODEL",
    "ImageBatch",
    "ImageDataset",
    "ImageList",
    "LoadedModel",
    "Preprocessing",
    "available_models",
    "deprocess",
    "imagenet_categories",
    "list_images",
    "load_image",
    "load_model",
    "preprocess",
    "sample_images",
]
