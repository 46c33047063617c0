"""OUT/shortcuts/: shortcuts.json, shortcuts.npz, shortcuts.pdf, html/ and shortcuts.manifest.json (last), written
atomically: a failed run leaves the previous folder as it was."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vizkit.jobs.shortcuts import ShortcutsConfig, ShortcutsResult, exemplar_images
from vizkit.load import LoadedModel
from vizkit.load.dataset import ImageDataset, ImageList
from vizkit.render.atomic import atomic_dir, output_folder
from vizkit.render.info import ReportInfo
from vizkit.render.manifest import write_manifest
from vizkit.render.shortcuts_html import write_gallery
from vizkit.render.shortcuts_pdf import pages_to_show, write_shortcuts_pdf


def npz_arrays(result: ShortcutsResult) -> dict[str, np.ndarray]:
    """paths, explained class, cluster (within the class), share in own cluster box, pooled and display maps,
    embedding; per analysed class its eigenvalues (``eigenvalues_<class>``)."""
    arrays = {"paths": np.array(result.paths), "explained": result.explained, "cluster": result.cluster,
              "share_in_box": result.share, "maps": result.pooled, "display_maps": result.display,
              "embedding": result.embedding}
    for a in result.classes:
        arrays[f"eigenvalues_{a.class_index}"] = a.spectral.eigenvalues
    return arrays


def write_shortcuts_outputs(result: ShortcutsResult, loaded: LoadedModel, images: ImageList,
                            config: ShortcutsConfig, timings: dict[str, float]) -> Path:
    final = output_folder(config.out, "shortcuts")
    wanted = [int(a.images[i]) for a in result.classes for c in a.clusters for i in c.exemplars]
    pictures = exemplar_images(ImageDataset(images, loaded.preprocessing), wanted)
    settings = {"data": str(config.data), "method": result.method, "layer": result.layer,
                "clusters": str(config.clusters), "batch_size": config.batch_size, "side": result.pooled.shape[-1],
                "classes": list(config.classes), "flagged": [a.class_index for a in pages_to_show(result)
                                                             if a.flagged],
                "skipped": [{"path": p, "reason": m} for p, m in result.skipped]}
    info = ReportInfo(str(config.data), loaded.name, loaded.weights, loaded.weights_sha256, loaded.pretrained,
                      loaded.preprocessing.to_dict(), settings, config.command)
    with atomic_dir(final) as tmp:
        (tmp / "shortcuts.json").write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
        np.savez_compressed(tmp / "shortcuts.npz", **npz_arrays(result))  # type: ignore[arg-type]
        write_shortcuts_pdf(tmp / "shortcuts.pdf", result, pictures)
        write_gallery(tmp / "html", result, pictures)
        write_manifest(tmp, info, timings, "shortcuts.manifest.json")
    return final
