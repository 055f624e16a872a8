"""Publishers' checkpoint layouts, made from a state dict in this project's (official) names."""


def as_mmpretrain(state: dict) -> dict:
    """An official state dict in mmpretrain's layout (``backbone.`` / ``head.fc.``, the last norm ``norm3``)."""
    out = {}
    for k, v in state.items():
        if k.startswith("norm."):
            k = "backbone.norm3." + k[5:]
        elif k.startswith("head.projection."):
            k = "head.fc." + k[len("head.projection.") :]
        else:
            k = "backbone." + k.replace("patch_embed.proj.", "patch_embed.projection.")
        out[k] = v
    return {"state_dict": out, "meta": {"mmpretrain_version": "1.0"}}
