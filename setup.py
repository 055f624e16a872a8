from setuptools import find_packages, setup

setup(
    name="mvit",
    version="0.1.0",
    description="MViTv2 for images, video and detection: one core, three projects",
    python_requires=">=3.10",
    packages=find_packages(include=["mvit", "mvit.*", "projects", "projects.*"]),
    install_requires=[
        "torch>=2.4",
        "torchvision",
        "fvcore",
        "iopath",
        "timm>=1.0",
        "tqdm",
        "matplotlib",
        "tensorboard",
        "submitit",
        "pycocotools",
        "shapely",  # detectron2 crops polygon masks with it (RandomCrop / FixedSizeCrop of the COCO recipes)
        "av",
        "pytorchvideo==0.1.5",
        "setuptools<81",
        "scikit-learn",  # tools/prepare_digits.py (the demo data)
    ],
    extras_require={
        "dev": ["pytest", "ruff", "scikit-image", "scikit-video", "onnx", "onnxruntime", "onnxscript"],
    },
)
