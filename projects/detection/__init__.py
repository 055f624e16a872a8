"""COCO detection and instance segmentation with MViTv2 as a detectron2 backbone."""

import logging

# detectron2's ROI pooler asks torch.fx whether it is tracing through an API that torch 2.14 deprecates with a logged
# warning on every first inference; it says nothing a user can act on and would break the one-line error reports.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
