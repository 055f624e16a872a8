from setuptools import Extension, find_packages, setup

# The core (`import mvit`: models, zoo, checkpoints, configs, export) needs only these.
CORE = [
    "torch>=2.4",
    "torchvision",
    "fvcore",
    "iopath",
    "numpy",
    "pyyaml",  # official yaml files (mvit.config.compat)
    "safetensors",  # mvit.checkpoint's safe weights format
    "tqdm",  # download progress of mvit.checkpoint.hub
]

# The training engine (mvit.engine), its data and process layers (mvit.data, mvit.runtime), tools/run_net.py,
# tools/predict.py and the image classification project they serve: an extra and not core, so that loading a model
# pulls in no trainer, plotting or logging stack.
TRAIN = [
    "timm>=1.0",  # Mixup, losses and EMA of the engine; RandAugment / random erasing of the classification data
    "Pillow",  # image decoding of the classification data
    "tqdm",
    "matplotlib",  # curves.png
    "tensorboard",  # TRAIN.TENSORBOARD (on by default)
    "scikit-learn",  # tools/prepare_digits.py (the demo's data)
]
EXTRAS = {
    "train": TRAIN,
    "video": [*TRAIN, "av", "pytorchvideo==0.1.5"],
    # detectron2 itself comes from tools/install_detectron2.sh (no wheel for every Python / torch pair).
    "detection": [
        *TRAIN,  # train_net uses the engine's cooperative preemption
        "pycocotools",
        "shapely",  # detectron2 crops polygon masks with it (RandomCrop / FixedSizeCrop of the COCO recipes)
        "matplotlib",  # projects/detection/demo.py
        "scikit-image",  # the synthetic COCO set's photo backgrounds
        "scikit-learn",
        "setuptools<81",  # pkg_resources, which detectron2.model_zoo imports
    ],
    "slurm": ["submitit"],
    "hub": ["huggingface_hub"],  # mvit.checkpoint.hf_hub: the releases' timm copies on the Hugging Face hub
    # tools/export.py's ONNX path and its check; torchao: int8 serving (PT2E quantization, torch 2.14)
    "export": ["onnx", "onnxruntime", "onnxscript", "torchao>=0.18.0,<0.19"],
}
EXTRAS["dev"] = [*EXTRAS["export"], "pytest", "ruff", "scikit-image", "scikit-video"]
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="mvit",
    version="0.1.0",
    description="MViTv2 for images, video and detection: one core, three projects",
    python_requires=">=3.10",
    packages=find_packages(include=["mvit", "mvit.*", "projects", "projects.*"]),
    install_requires=CORE,
    extras_require=EXTRAS,
    # Pillow's affine filter for RandAugment's shears and translations, byte for byte and 3x faster, used only by
    # the training data (mvit/data/augment.py, the train / video extras). Optional: without a C compiler the install
    # goes on and Pillow does the work with the same bytes; the core never imports it.
    ext_modules=[
        Extension(
            "mvit.data._affine",
            ["mvit/data/_affine.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],  # no fused multiply-add: Pillow's rounding
            optional=True,
        )
    ],
)
