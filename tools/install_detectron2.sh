#!/usr/bin/env bash
# Installs detectron2 into the environment of the given interpreter (see projects/detection/README.md).
#
# Usage: bash tools/install_detectron2.sh [PYTHON_BIN]        (idempotent)
#
# Route 1: a detectron2 that is already importable (e.g. built from source with CUDA ops, as detectron2's
#          INSTALL.md documents) is used as it is.
# Route 2: otherwise the PyPI wheel `sal-detectron2==0.7.2` (upstream detectron2's Python code, wheel tagged
#          cp310 only) is downloaded and repacked as a pure-Python py3-none-any wheel without its compiled
#          `detectron2/_C` (built for another Python/torch; unusable here) and without the stray top-level
#          `tools` package it ships (which would shadow this project's `tools/`), then installed with --no-deps.
#          Everything Mask R-CNN / Cascade Mask R-CNN with an MViT backbone needs runs without `_C` (ROIAlign and
#          NMS come from torchvision); rotated boxes and deformable conv are unavailable on this route.
# In both routes detectron2's pure-Python runtime dependencies are installed when missing, and a stray `tools`
# package left in site-packages by an earlier plain install of sal-detectron2 is removed.
set -euo pipefail
PYBIN=${1:-python}
PIP=("$PYBIN" -m pip)
D2_WHEEL_REQ="sal-detectron2==0.7.2"

# detectron2's runtime requirements (its setup.py install_requires), minus numpy<2: detectron2's Python code runs
# with numpy 2 for everything this project uses. setuptools<81 keeps pkg_resources (detectron2.model_zoo uses it).
# black is only needed by LazyConfig.to_py (printing a config as Python code); opencv by the Visualizer.
"${PIP[@]}" install -q "Pillow>=7.1" matplotlib "pycocotools>=2.0.2" "termcolor>=1.1" "yacs>=0.1.8" tabulate \
  cloudpickle "tqdm>4.29.0" tensorboard fvcore iopath "omegaconf>=2.1,<2.4" "hydra-core>=1.1" black packaging \
  "opencv-python-headless<5" \
  "setuptools<81"

# Remove a stray top-level `tools` package owned by sal-detectron2 (only that one: its RECORD must list it).
remove_stray_tools() {
  "$PYBIN" - <<'EOF'
import shutil
import sysconfig
from importlib import metadata
from pathlib import Path

try:
    dist = metadata.distribution("sal-detectron2")
except metadata.PackageNotFoundError:
    raise SystemExit(0)
owned = {Path(f.parts[0]) for f in (dist.files or []) if f.parts and f.parts[0] == "tools"}
for root in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
    for rel in owned:
        path = Path(root) / rel
        if path.is_dir():
            shutil.rmtree(path)
            print(f"install_detectron2: removed stray package {path} (shipped by sal-detectron2)")
EOF
}

if "$PYBIN" -c "import detectron2.modeling" 2>/dev/null; then
  remove_stray_tools
  echo "install_detectron2: using the detectron2 already importable by $PYBIN"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version 3.10 -d "$work/dl" "$D2_WHEEL_REQ"
  src=$(ls "$work"/dl/sal_detectron2-*.whl)
  # Repack: py3-none-any tag, purelib, no _C, no top-level tools; RECORD rewritten with fresh hashes.
  "$PYBIN" - "$src" "$work/out" <<'EOF'
import base64
import hashlib
import sys
import zipfile
from pathlib import Path

src, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
out_dir.mkdir(parents=True)
name, version = src.name.split("-")[:2]
dst = out_dir / f"{name}-{version}-py3-none-any.whl"


def dropped(path: str) -> bool:
    return path.startswith("tools/") or path.startswith("detectron2/_C.")


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    record_path, lines = None, []
    for info in zin.infolist():
        path = info.filename
        if dropped(path):
            continue
        if path.endswith(".dist-info/RECORD"):
            record_path = path
            continue
        data = zin.read(info)
        if path.endswith(".dist-info/WHEEL"):
            text = data.decode()
            text = text.replace("Root-Is-Purelib: false", "Root-Is-Purelib: true")
            text = "\n".join("Tag: py3-none-any" if ln.startswith("Tag:") else ln for ln in text.splitlines()) + "\n"
            data = text.encode()
        elif path.endswith(".dist-info/top_level.txt"):
            data = b"detectron2\n"
        zout.writestr(path, data)
        lines.append(record_line(path, data))
    lines.append(f"{record_path},,")
    zout.writestr(record_path, "\n".join(lines) + "\n")
print(dst)
EOF
  "${PIP[@]}" install -q --no-deps "$work"/out/*.whl
  remove_stray_tools
fi

# Verify: the parts this project uses import, and `tools` is not detectron2's.
"$PYBIN" - <<'EOF'
import importlib.util

import detectron2
import detectron2.config
import detectron2.engine
import detectron2.evaluation
import detectron2.modeling
from detectron2.modeling.backbone.mvit import MViT  # noqa: F401

spec = importlib.util.find_spec("tools")
if spec is not None and spec.origin and "site-packages" in spec.origin:
    raise SystemExit(f"install_detectron2: a stray 'tools' package still shadows the project's: {spec.origin}")
has_c = importlib.util.find_spec("detectron2._C") is not None
print(f"install_detectron2: detectron2 {detectron2.__version__} at {detectron2.__path__[0]} (compiled ops: {has_c})")
EOF
