"""A benchmark image folder, made offline from the photos shipped with scikit-image and matplotlib.

    python benchmarks/_images.py OUT [N] [--size 256]

Writes N deterministic crops (random box of 35-100 % of the shorter side, random horizontal flip, resized to
``size`` x ``size``) as JPEG files into OUT/<photo>/<index>.jpg: one class folder per source photo, so
``vizkit mine --per-class`` has classes. Nothing is downloaded; no image is committed. Calling it again with the
same arguments leaves a complete folder untouched.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

#: Colour photos bundled inside scikit-image (no pooch download needed) plus matplotlib's Grace Hopper.
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg", "hubble_deep_field.jpg",
          "ihc.png", "retina.jpg", "horse.png", "camera.png")


def source_photos() -> dict[str, Image.Image]:
    import matplotlib.cbook
    import skimage.data

    data_dir = Path(skimage.data.data_dir)
    photos = {Path(name).stem: Image.open(data_dir / name).convert("RGB") for name in PHOTOS
              if (data_dir / name).is_file()}
    hopper = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    photos["grace_hopper"] = Image.open(hopper).convert("RGB")
    return photos


def make_image_folder(out: str | Path, n: int, size: int = 256, seed: int = 0) -> Path:
    """Write (or reuse) the folder of ``n`` crops and return it."""
    out = Path(out)
    stamp = {"n": n, "size": size, "seed": seed, "photos": list(PHOTOS)}
    marker = out / ".complete.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return out
    photos = source_photos()
    names = sorted(photos)
    rng = np.random.default_rng(seed)
    for i in range(n):
        name = names[i % len(names)]
        img = photos[name]
        side = int(min(img.size) * rng.uniform(0.35, 1.0))
        left = int(rng.integers(0, img.size[0] - side + 1))
        top = int(rng.integers(0, img.size[1] - side + 1))
        crop = img.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        path = out / name / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, quality=92)
    marker.write_text(json.dumps(stamp))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("n", type=int, nargs="?", default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_image_folder(args.out, args.n, args.size, args.seed))


if __name__ == "__main__":
    main()
