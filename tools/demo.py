#!/usr/bin/env python3
"""The README's main job on a small embedded default: the model zoo and a forward pass of every family.

Prints parameters of every zoo model (built on the meta device: no memory, no download), then classifies
a real photo that ships with scikit-image using a randomly initialised MViTv2-T (no weights can be
downloaded here) to show the API end to end.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import mvit  # noqa: E402
from mvit.models import model_info  # noqa: E402


def main() -> None:
    print(f"{'model':<16}{'input':>14}{'params':>16}{'GFLOPs':>10}")
    for name in mvit.list_models():
        with torch.device("meta"):
            model = mvit.create_model(name)
        info = model_info(name)
        size = "x".join(map(str, model.cfg.input_size))
        print(f"{name:<16}{size:>14}{sum(p.numel() for p in model.parameters()):>16,}{info.gflops:>10.3f}")

    model = mvit.create_model("mvitv2_t").eval()
    try:
        from skimage import data

        image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    except ImportError:
        image = torch.rand(3, 512, 512)
    x = torch.nn.functional.interpolate(image[None], size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor(model_info("mvitv2_t").mean).view(1, 3, 1, 1)
    std = torch.tensor(model_info("mvitv2_t").std).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((x - mean) / std)
    print(
        f"\nmvitv2_t (random weights) on skimage's astronaut: logits {tuple(logits.shape)}, "
        f"top-1 class index {logits.argmax(1).item()}"
    )


if __name__ == "__main__":
    main()
