"""torch.hub entry points: one per zoo model, generated from the registry (``mvit.list_models()``).

    model = torch.hub.load("<this repository's folder>", "mvitv2_t", pretrained=True, source="local")

``pretrained=True`` loads the model's default release (``mvit.models.weights.list_weights(name)``), a tag string
another release of it; the file comes from torch.hub's cache, downloaded and verified when it is not there.
Keyword arguments are :class:`mvit.MViTConfig` fields (``num_classes=10``, ...), as for :func:`mvit.create_model`.
"""

import typing as _typing

from mvit import create_model as _create_model
from mvit import list_models as _list_models
from mvit.models import model_info as _model_info
from mvit.models.weights import list_weights as _list_weights

# Importable names torch.hub checks before loading (the core's requirements, setup.py CORE).
dependencies = ["torch", "torchvision", "fvcore", "iopath", "numpy", "yaml", "safetensors", "tqdm"]


def _entrypoint(name: str) -> _typing.Callable:
    def entrypoint(pretrained: _typing.Union[bool, str] = False, progress: bool = True, **overrides):
        return _create_model(name, pretrained=pretrained, progress=progress, **overrides)

    info = _model_info(name)
    tags = _list_weights(name, include_detectors=False)
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = (
        f"{name}: MViTv2, {info.num_params / 1e6:.1f}M parameters, {info.gflops:g} GFLOPs ({info.dataset}).\n\n"
        f"Args:\n"
        f"    pretrained: True for the default release ({tags[0] if tags else 'none'}), a tag for another"
        f" ({', '.join(tags) or 'none'}), False for random weights.\n"
        f"    progress: show a progress bar while downloading.\n"
        f"    **overrides: MViTConfig fields, e.g. num_classes=10 (a new head; the rest is loaded).\n"
    )
    return entrypoint


for _name in _list_models():
    globals()[_name] = _entrypoint(_name)
