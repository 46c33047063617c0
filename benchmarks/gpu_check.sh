#!/usr/bin/env bash
# `vizkit mine` on CUDA: the same results as on the CPU, and the speed of both passes. About 3-5 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh [WORKDIR]
#
# 1. Scan: one seeded random-init VGG16 (offline) scans 64 generated images (benchmarks/_images.py) on the CPU and
#    on CUDA with vizkit.jobs.mine_dataset(); per layer and channel the top-K image sets must be equal, except where
#    the K-th and (K+1)-th values tie to float tolerance (then the set may differ only at that cut), and values
#    must agree to 1e-4 relative.
# 2. Projections: bench_mine_project.py --quick on the CPU saves its requests and projections; the CUDA run
#    projects the same requests (--requests); every projection must agree to 1e-3 relative to its peak.
#    TF32 is switched off for these comparisons.
# 3. Speed on CUDA: bench_mine_scan.py (scan vs plain inference; --skip-crp) and bench_mine_project.py (64 units x 9
#    of features.29 vs Captum, which also checks agreement with Captum on CUDA). Their `target ...` lines are
#    printed; copy them into benchmarks/README.md with the GPU's name.
# 4. vizkit dream on CUDA: the same seed gives the same start images as on the CPU (the random numbers are drawn on
#    the CPU) and one step's images agree to 1e-3; then bench_dream.py's throughput section on CUDA beside horama
#    (skipped with a line when horama is not installed).
# Exits 1 at the first disagreement.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
export PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to check')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python benchmarks/_images.py "$WORK/images" 64 >/dev/null

echo "== 1. scan: CPU and CUDA give the same top-K sets"
python - "$WORK/images" <<'EOF'
import copy, sys
import numpy as np, torch, torchvision
from vizkit.jobs.mine import mine_dataset
from vizkit.load.dataset import ImageDataset, list_images
from vizkit.load.preprocessing import Preprocessing

torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
torch.manual_seed(0)
model = torchvision.models.vgg16().eval()
layers = ["features.8", "features.15", "features.22", "features.29"]
dataset = ImageDataset(list_images(sys.argv[1]), Preprocessing(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
results = {}
for dev in ("cpu", "cuda"):
    device = torch.device(dev)
    results[dev] = mine_dataset(copy.deepcopy(model).to(device), dataset, layers, k=9, batch_size=16, device=device)
bad = 0
for name in layers:
    a, b = results["cpu"].layers[name], results["cuda"].layers[name]
    for c in range(a.values.shape[0]):
        sa, sb = set(a.image_index[c].tolist()), set(b.image_index[c].tolist())
        cut = float(a.values[c, -1])
        near = np.isclose(a.values[c], cut, rtol=1e-4, atol=1e-6) | np.isclose(b.values[c], cut, rtol=1e-4, atol=1e-6)
        differ = sa ^ sb
        at_cut = set(a.image_index[c][near].tolist()) | set(b.image_index[c][near].tolist())
        if not differ <= at_cut or not np.allclose(a.values[c], b.values[c], rtol=1e-4, atol=1e-6):
            bad += 1
    print(f"{name}: {a.values.shape[0]} channels, {bad} disagreeing so far")
if bad:
    sys.exit(f"FAIL: {bad} channels have different top-K sets or values on CUDA")
print("scan: CUDA equals CPU")
EOF

echo "== 2. projections: CUDA equals CPU on the same requests"
python benchmarks/bench_mine_project.py --quick --data "$WORK/images" --images 64 --device cpu --threads 8 \
    --save "$WORK/cpu.npz"
python benchmarks/bench_mine_project.py --quick --data "$WORK/images" --images 64 --device cuda \
    --requests "$WORK/cpu.npz" --save "$WORK/cuda.npz"
python - "$WORK/cpu.npz" "$WORK/cuda.npz" <<'EOF'
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert (a["requests"] == b["requests"]).all(), "the CUDA run projected other requests"
n = len(a["requests"])
errs = [float(np.abs(a[f"p{i}"] - b[f"p{i}"]).max() / max(np.abs(a[f"p{i}"]).max(), 1e-30)) for i in range(n)]
print(f"{n} projections: max relative difference CUDA vs CPU {max(errs):.2e}")
if max(errs) > 1e-3:
    sys.exit("FAIL: CUDA projections differ from the CPU ones")
EOF

echo "== 3. speed on CUDA"
python benchmarks/bench_mine_scan.py --device cuda --data "$WORK/images" --images 64 --skip-crp
python benchmarks/bench_mine_project.py --device cuda --data "$WORK/images" --images 64
echo "== 4. dream: CUDA from the same seed, and throughput beside horama"
python - <<'EOF'
import sys
import numpy as np, torch
from vizkit.load import load_model
from vizkit.project.dream import DreamSettings, class_logit, dream

torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
lm = load_model("efficientnet_lite0")
p = lm.preprocessing
images = {}
for dev in ("cpu", "cuda"):
    out = dream(lm.model.to(dev), [class_logit(c) for c in (1, 2, 94, 130)], mean=p.mean, std=p.std,
                settings=DreamSettings(steps=1, seed=3, batch_size=4))
    images[dev] = np.asarray(out.images)
diff = float(np.abs(images["cpu"] - images["cuda"]).max())
print(f"dream, 4 classes, 1 step: max |CPU - CUDA| {diff:.2e}")
if diff > 1e-3:
    sys.exit("FAIL: the CUDA dream does not start from the CPU's images")
EOF
if python -c "import horama" 2>/dev/null; then
    python benchmarks/bench_dream.py --sections a --device cuda
else
    echo "horama not installed: bench_dream.py's GPU throughput skipped (pip install -r benchmarks/requirements.txt)"
fi
echo "gpu_check: all checks passed"
