"""What a project's dataset needs: deterministic sharded loading, the dataset / input-loader registry and the
fast augmentation (with its optional C kernel). Imports no training loop."""

from .augment import ToNormalizedTensor, accelerate, affine_transform, augmentation_keys
from .loader import (
    EpochShardSampler,
    LoaderWorkerError,
    SeededDataset,
    build_loader,
    collate_items,
    describe_worker_failure,
    loader_workers,
    shutdown_loader,
)
from .registry import (
    build_dataset,
    check_datasets,
    find_input_loader,
    list_datasets,
    register_dataset,
    register_input_loader,
)

__all__ = [
    "EpochShardSampler",
    "LoaderWorkerError",
    "SeededDataset",
    "ToNormalizedTensor",
    "accelerate",
    "affine_transform",
    "augmentation_keys",
    "build_dataset",
    "build_loader",
    "check_datasets",
    "collate_items",
    "describe_worker_failure",
    "find_input_loader",
    "list_datasets",
    "loader_workers",
    "register_dataset",
    "register_input_loader",
    "shutdown_loader",
]
