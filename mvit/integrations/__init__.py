"""Glue to other libraries (optional dependencies): ``mvit.integrations.timm`` registers the models in timm."""
