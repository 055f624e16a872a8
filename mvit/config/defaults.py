"""Default experiment config of the core (fvcore ``CfgNode``, the yacs dialect PySlowFast uses).

Only keys the core library itself reads live here: the model (``MVIT.*``, ``MODEL.*``), the shared
training engine (``TRAIN.*``, ``SOLVER.*``, ``TEST.*``, ``AUG.*``, ``MIXUP.*``, ``DATA_LOADER.*``) and the
launcher. A project adds its own keys with an ``add_*_config(cfg)`` function (detectron2's pattern).
"""

from fvcore.common.config import CfgNode

from .arch import mvit_cfg_node

_C = CfgNode()

# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------
_C.MODEL = CfgNode()
# Number of output classes of the classification head (0: no head, features only).
_C.MODEL.NUM_CLASSES = 1000
# Dropout before the final projection of the head.
_C.MODEL.DROPOUT_RATE = 0.0
# Loss: "soft_cross_entropy" (mixup / label smoothing targets) or "cross_entropy".
_C.MODEL.LOSS_FUNC = "soft_cross_entropy"
# Activation checkpointing of every block (trades compute for memory).
_C.MODEL.ACT_CHECKPOINT = False

# ---------------------------------------------------------------------------
# MViT architecture: derived from mvit.models.MViTConfig, one key per field (upper case; official names
# where they differ, see mvit.config.arch.MVIT_KEY_ALIASES). None = unset: the value of the ARCH model, or
# without ARCH the official facebookresearch/mvit default. load_config writes every unset key, so a loaded
# config spells out the whole architecture. Input size, channels, classes, head dropout and activation
# checkpointing are MViTConfig fields read from DATA.* and MODEL.* (mvit.config.arch.SECTION_KEYS).
# ---------------------------------------------------------------------------
_C.MVIT = mvit_cfg_node()
# A zoo model (mvit.list_models(), e.g. "mvitv2_b") whose architecture the keys set beside it override.
_C.MVIT.ARCH = ""
# Also exclude position embeddings, the class token and the rel-pos tables from weight decay (an optimizer key).
# False as in facebookresearch/mvit's defaults and every released MViTv2 recipe (PySlowFast's files set False).
_C.MVIT.ZERO_DECAY_POS_CLS = False

# ---------------------------------------------------------------------------
# Data (common to images and video; the video project adds its own keys)
# ---------------------------------------------------------------------------
_C.DATA = CfgNode()
_C.DATA.PATH_TO_DATA_DIR = ""
_C.DATA.MEAN = [0.485, 0.456, 0.406]
_C.DATA.STD = [0.229, 0.224, 0.225]
_C.DATA.TRAIN_CROP_SIZE = 224
_C.DATA.TEST_CROP_SIZE = 224
# Test resize = crop / VAL_CROP_RATIO (224 / 0.875 = 256).
_C.DATA.VAL_CROP_RATIO = 0.875
# Frames per clip seen by the model; 1 means images (N, 3, H, W).
_C.DATA.NUM_FRAMES = 1
_C.DATA.IN_CHANS = 3

# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True
_C.TRAIN.DATASET = "imagenet"
# Items (images or clips) of one optimizer step on ONE machine, as in PySlowFast: divided among its NUM_GPUS
# processes and GRAD_ACCUM_STEPS; the global batch is BATCH_SIZE x NUM_SHARDS. Each item gives AUG.NUM_SAMPLE
# rows of the model's batch (mvit/engine/batch.py).
_C.TRAIN.BATCH_SIZE = 256
_C.TRAIN.EVAL_PERIOD = 10
_C.TRAIN.CHECKPOINT_PERIOD = 10
_C.TRAIN.AUTO_RESUME = True
# Weights to start from (any format the checkpoint module reads).
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
# Precision: "fp32", "bf16" or "fp16" (fp16 uses a GradScaler; GPU only).
_C.TRAIN.MIXED_PRECISION = "fp32"
# float32 matmul precision (torch.set_float32_matmul_precision): "highest", "high" or "medium"; cuDNN convolutions
# use TF32 unless "highest". "auto": "high" (TF32) on CUDA, "highest" on the CPU (mvit/engine/backends.py).
_C.TRAIN.MATMUL_PRECISION = "auto"
# cudnn.benchmark on CUDA (inputs have one size per job, so autotuning pays once); train and test jobs.
_C.TRAIN.CUDNN_BENCHMARK = True
# Optimizer steps accumulate this many micro-batches of TRAIN.BATCH_SIZE / NUM_GPUS / GRAD_ACCUM_STEPS items.
_C.TRAIN.GRAD_ACCUM_STEPS = 1
# Also write checkpoints/last.pyth every N optimizer steps (0: only at epoch ends).
_C.TRAIN.CHECKPOINT_ITER_PERIOD = 0
# Exponential moving average of the weights, evaluated beside the raw model (timm ModelEmaV3).
_C.TRAIN.EMA_ENABLE = False
_C.TRAIN.EMA_DECAY = 0.9999
# Ramp the EMA decay up over the first steps (timm's use_warmup).
_C.TRAIN.EMA_WARMUP = False
# TensorBoard scalars in OUTPUT_DIR/tensorboard (the JSON-lines file and the PNG plot are always written).
_C.TRAIN.TENSORBOARD = True
# A NaN / inf loss: "stop" (one line naming the iteration and the last good checkpoint, as PySlowFast stops on
# NaN) or "skip" the step's update and count it; skipping stops after NONFINITE_MAX_SKIPS steps in a row
# or when a whole epoch was skipped.
_C.TRAIN.NONFINITE_LOSS = "stop"
_C.TRAIN.NONFINITE_MAX_SKIPS = 10

# ---------------------------------------------------------------------------
# Augmentation and mixup (timm implementations)
# ---------------------------------------------------------------------------
_C.AUG = CfgNode()
_C.AUG.ENABLE = True
# Repeated augmentation: each item appears this many times per batch (TRAIN.BATCH_SIZE counts items).
_C.AUG.NUM_SAMPLE = 1
_C.AUG.COLOR_JITTER = 0.4
_C.AUG.AA_TYPE = "rand-m9-n6-mstd0.5-inc1"
_C.AUG.INTERPOLATION = "bicubic"
_C.AUG.RE_PROB = 0.25
_C.AUG.RE_MODE = "pixel"
_C.AUG.RE_COUNT = 1
# RandomResizedCrop area and aspect ranges, and the horizontal flip probability (images).
_C.AUG.SCALE = [0.08, 1.0]
_C.AUG.RATIO = [0.75, 1.3333333333333333]
_C.AUG.HFLIP = 0.5

_C.MIXUP = CfgNode()
_C.MIXUP.ENABLE = True
_C.MIXUP.ALPHA = 0.8
_C.MIXUP.CUTMIX_ALPHA = 1.0
_C.MIXUP.PROB = 1.0
_C.MIXUP.SWITCH_PROB = 0.5
_C.MIXUP.LABEL_SMOOTH_VALUE = 0.1

# ---------------------------------------------------------------------------
# Optimizer and schedule
# ---------------------------------------------------------------------------
_C.SOLVER = CfgNode()
# The lr; multiplied by one of the two rules below (WARMUP_START_LR and COSINE_END_LR alike).
_C.SOLVER.BASE_LR = 2.5e-4
# PySlowFast's rule: lr x NUM_SHARDS (TRAIN.BATCH_SIZE is per machine, so the global batch grows alike).
_C.SOLVER.BASE_LR_SCALE_NUM_SHARDS = False
# Linear scaling rule (this project's): BASE_LR is per this many items of the global batch TRAIN.BATCH_SIZE x
# NUM_SHARDS, lr = BASE_LR x global batch / BASE_LR_BATCH_SIZE. 0: off, as the publishers' files mean.
_C.SOLVER.BASE_LR_BATCH_SIZE = 0
_C.SOLVER.LR_POLICY = "cosine"
_C.SOLVER.COSINE_END_LR = 1e-6
_C.SOLVER.COSINE_AFTER_WARMUP = True
_C.SOLVER.WARMUP_EPOCHS = 70.0
_C.SOLVER.WARMUP_START_LR = 1e-8
_C.SOLVER.MAX_EPOCH = 300
_C.SOLVER.OPTIMIZING_METHOD = "adamw"
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = True
_C.SOLVER.BETAS = [0.9, 0.999]
_C.SOLVER.ADAMW_EPS = 1e-8
_C.SOLVER.WEIGHT_DECAY = 0.05
# No weight decay on 1-D parameters (biases, norms).
_C.SOLVER.ZERO_WD_1D_PARAM = True
_C.SOLVER.CLIP_GRAD_L2NORM = 1.0
# Layer-wise lr decay (1.0 disables).
_C.SOLVER.LAYER_DECAY = 1.0

# ---------------------------------------------------------------------------
# Testing
# ---------------------------------------------------------------------------
_C.TEST = CfgNode()
_C.TEST.ENABLE = True
_C.TEST.DATASET = "imagenet"
# Items per forward pass on ONE machine (divided among its NUM_GPUS processes), as in PySlowFast.
_C.TEST.BATCH_SIZE = 64
_C.TEST.CHECKPOINT_FILE_PATH = ""

# ---------------------------------------------------------------------------
# Data loader
# ---------------------------------------------------------------------------
_C.DATA_LOADER = CfgNode()
_C.DATA_LOADER.NUM_WORKERS = 8
_C.DATA_LOADER.PIN_MEMORY = True

# ---------------------------------------------------------------------------
# Launch (PySlowFast semantics: NUM_GPUS processes per machine, NUM_SHARDS machines)
# ---------------------------------------------------------------------------
# Processes per machine, one GPU each (PySlowFast). 0: one process on the CPU. More than the GPUs visible, or
# CUDA unavailable, stops with one line (never a silent fallback to the CPU) unless DEVICE is cpu.
_C.NUM_GPUS = 1
# "cuda", or "cpu": NUM_GPUS processes on the CPU (gloo), e.g. to test a multi-process run without GPUs.
_C.DEVICE = "cuda"
# Machines of the job, and this machine's index (each machine runs tools/run_net.py with its own SHARD_ID).
_C.NUM_SHARDS = 1
_C.SHARD_ID = 0
_C.INIT_METHOD = "tcp://localhost:9999"
_C.DIST_BACKEND = "nccl"
# Seconds a collective waits for a slow or lost peer before the survivors stop (exit 69, requeued under SLURM).
# $MVIT_DIST_TIMEOUT overrides it.
_C.DIST_TIMEOUT_S = 1800.0
_C.OUTPUT_DIR = "./output"
_C.RNG_SEED = 0
_C.LOG_PERIOD = 10
# Intra-op CPU threads per process (0: PyTorch's default; when several CPU processes are spawned on one
# machine, the machine's cores divided among them). 1 is fastest on a CPU shared with other jobs.
_C.CPU_THREADS = 0


def get_cfg() -> CfgNode:
    """A fresh copy of the core defaults (``MVIT.*`` architecture keys unset until :func:`mvit.config.load_config`)."""
    return _C.clone()
