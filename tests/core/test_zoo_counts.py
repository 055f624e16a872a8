"""Parameter and FLOP counts of the zoo equal the published / reference figures."""

import pytest
import torch

import mvit
from mvit import resolve_config
from mvit.models import MViT, model_info

# (name, parameters) from timm, torchvision and PySlowFast (see docs/model_zoo.md).
PARAMS = {
    "mvitv2_t": 24_173_320,
    "mvitv2_s": 34_870_216,
    "mvitv2_b": 51_472_744,
    "mvitv2_l": 217_992_952,
    "mvitv2_h": 666_879_912,
    "mvitv2_s_16x4": 34_537_744,
    "mvitv2_b_32x3": 51_230_128,
    "mvitv2_l_40x3": 213_390_112,  # PySlowFast's MVITv2_L_40x3 config (DIM_MUL_IN_ATT True)
}
GFLOPS = {
    "mvitv2_t": 4.704,
    "mvitv2_s": 6.998,
    "mvitv2_b": 10.159,
    "mvitv2_l": 43.869,
    "mvitv2_h": 120.64,
    "mvitv2_s_16x4": 64.457,
    "mvitv2_b_32x3": 225.170,
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_is_exact(name):
    with torch.device("meta"):
        model = mvit.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_every_zoo_entry_states_its_parameter_count():
    for name in mvit.list_models():
        with torch.device("meta"):
            model = mvit.create_model(name)
        assert model_info(name).num_params == sum(p.numel() for p in model.parameters()), name


def _gflops(name: str) -> float:
    from fvcore.nn import FlopCountAnalysis

    model = MViT(resolve_config(name, attn_impl="explicit")).eval()
    flops = FlopCountAnalysis(model, torch.randn(1, 3, *model.config.input_size))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    with torch.no_grad():
        return flops.total() / 1e9


@pytest.mark.parametrize("name", ["mvitv2_t", "mvitv2_s", "mvitv2_s_16x4"])
def test_flops_match_published(name):
    assert _gflops(name) == pytest.approx(GFLOPS[name], rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mvitv2_b", "mvitv2_l", "mvitv2_h", "mvitv2_b_32x3"])
def test_flops_match_published_large(name):
    assert _gflops(name) == pytest.approx(GFLOPS[name], rel=1e-3)
