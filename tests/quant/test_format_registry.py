"""The format registry: names and aliases, unknown names, bits per weight from the specs, and every registered
format through its torch reference and its Triton kernel, bit for bit."""

import pytest
import torch
from quant_cases import DEVICE, assert_values_equal, make_weight, requires_triton

from lowbit.errors import UsageError
from lowbit.quant import fake_quant as fq
from lowbit.quant.formats import integer, registry
from lowbit.quant.schemes import SCHEMES, resolve_scheme

SHAPE = (128, 256)  # a multiple of every block, 128x128 tiles included


@pytest.mark.parametrize(("spelling", "canonical"), [
    ("int4_g128", "int4_g128"), ("w4a16_g128", "int4_g128"), ("INT4-G32", "int4_g32"), ("w4a16-g32", "int4_g32"),
    ("fp8_block", "fp8-block"), ("FP8-Dynamic", "fp8"), ("NVFP4", "nvfp4"), ("mxfp4", "mxfp4"),
])
def test_aliases_resolve_to_the_canonical_format(spelling, canonical):
    assert registry.get_format(spelling).name == canonical


def test_every_spelling_names_one_format():
    spellings = [s for spec in registry.formats() for s in (spec.name, *spec.aliases)]
    keys = [s.lower().replace("-", "_") for s in spellings]
    assert len(keys) == len(set(keys))


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match=r"^unknown format 'int3': choose one of int8, int4_g32, int4_g128, "):
        registry.get_format("int3")
    with pytest.raises(ValueError, match=r"^act_quant 'int4_g128' is unknown: choose one of none, int8, fp8, mxfp8, "
                                         r"mxfp4, nvfp4$"):
        registry.activation_format("int4_g128")
    with pytest.raises(ValueError, match=r"^weight_quant 'fp8-block' is unknown: choose one of none, int8, int4_g32, "
                                         r"int4_g128, fp8, mxfp8, mxfp4, nvfp4$"):
        registry.weight_format("fp8-block")
    assert registry.activation_format("none") is None and registry.weight_format("None") is None


def test_fake_quant_records_the_canonical_spelling():
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Module()])
    model.layers[0].proj = torch.nn.Linear(128, 8)
    emulation = fq.apply_fake_quant(model, act_quant="MXFP8", weight_quant="w4a16_g128", backend="ref")
    described = emulation.describe()
    assert (described["act_quant"], described["weight_quant"]) == ("mxfp8", "int4_g128")
    assert described["weight_scheme"] == "INT4 symmetric, groups of 128"
    assert fq.check_formats("FP8", "w4a16_g32") == ("fp8", "int4_g32")


@pytest.mark.parametrize(("name", "bits"), [
    ("nvfp4", 4.5), ("mxfp4", 4.25), ("mxfp8", 8.25), ("int4_g128", 4.125), ("int4_g32", 4.5),
    ("fp8", 8 + 32 / 4096), ("fp8-block", 8 + 32 / (128 * 128)), ("int8", 8 + 32 / 4096),
])
def test_bits_per_weight_come_from_the_spec(name, bits):
    from lowbit.report.bits import bits_per_weight

    spec = registry.get_format(name)
    assert spec.bits_per_weight == pytest.approx(bits, abs=1e-12)
    for label in (spec.name, *spec.aliases, *spec.labels):
        assert bits_per_weight(label.upper(), None).bits == pytest.approx(bits, abs=1e-4), label


def test_a_scheme_is_named_by_its_weight_formats():
    assert resolve_scheme("int4_g32", None) == (SCHEMES["w4a16"], 32)
    assert resolve_scheme("w4a16_g128", 128) == (SCHEMES["w4a16"], 128)
    assert resolve_scheme("w4a16", None) == (SCHEMES["w4a16"], None)  # the scheme resolves its default
    assert resolve_scheme("w4a16", 64) == (SCHEMES["w4a16"], 64)  # and refuses what it does not take
    assert resolve_scheme("fp8_block", None) == (SCHEMES["fp8-block"], None)
    assert resolve_scheme("w8a8", None) is None  # a calibrated-only scheme: llm-compressor's table
    with pytest.raises(UsageError, match="scheme int4_g32 is w4a16 with group_size 32, got group_size 128"):
        resolve_scheme("int4_g32", 128)


def _stored(spec, weight):
    """The tensors `spec` stores for `weight` (int4_channel, which only GPTQ writes, from random codes)."""
    if spec.encode is not None:
        group_size = spec.block_size if spec.block_rows == 1 else None
        return spec.encode(weight, group_size, "ref", None)
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(-8, 8, weight.shape, generator=generator, dtype=torch.int32)
    scale = torch.rand((weight.shape[0], 1), generator=generator).to(torch.bfloat16)
    return {"weight_packed": integer.pack_int4(codes).to(weight.device), "weight_scale": scale.to(weight.device)}


@requires_triton
@pytest.mark.parametrize("name", list(registry.FORMATS))
def test_every_format_round_trips_through_its_reference_and_its_kernel(name):
    spec = registry.get_format(name)
    weight = make_weight("student_t", SHAPE, dtype=torch.bfloat16)
    stored = _stored(spec, weight)
    assert registry.stored_format(stored).decode is spec.decode  # the stored tensors name their format
    if spec.encode is not None:
        group_size = spec.block_size if spec.block_rows == 1 else None
        for suffix, tensor in spec.encode(weight, group_size, "triton", None).items():
            assert_values_equal(tensor.view(torch.uint8) if tensor.dtype == torch.float8_e4m3fn else tensor,
                                stored[suffix].view(torch.uint8) if tensor.dtype == torch.float8_e4m3fn
                                else stored[suffix])
    decoded = spec.decode(stored, torch.bfloat16, "ref")
    assert decoded.shape == SHAPE
    assert_values_equal(spec.decode(stored, torch.bfloat16, "triton"), decoded)
    if spec.fake_quantize_weight is not None:
        reference = spec.fake_quantize_weight(weight, "ref", None)
        assert_values_equal(reference, decoded)
        assert_values_equal(spec.fake_quantize_weight(weight, "triton", None), reference)


@requires_triton
@pytest.mark.parametrize("name", registry.activation_formats())
def test_every_activation_format_matches_its_kernel(name):
    from lowbit.quant import fake_quant_triton

    spec = registry.get_format(name)
    x = make_weight("normal", (4, 256), dtype=torch.bfloat16, device=DEVICE)
    assert_values_equal(fake_quant_triton.ActivationQuantizer(spec)(x), spec.fake_quantize_activation(x))


def test_the_transformers_predictor_config_lists_the_registered_formats():
    from importlib.resources import files

    lines = files("lowbit.conf").joinpath("predictor/transformers.yaml").read_text().splitlines()
    listed = {}
    for line in lines:
        key, _, comment = line.partition(":")
        if key in ("act_quant", "weight_quant"):
            names = comment.partition("#")[2].partition("(")[0]
            listed[key] = tuple(name.strip() for name in names.split("|"))
    assert listed == {"act_quant": ("none", *registry.activation_formats()),
                      "weight_quant": ("none", *registry.weight_formats())}


@pytest.mark.parametrize("family", ["nvfp4", "mx", "fp8", "integer"])
def test_kernel_modules_import_the_layout_not_the_reference(family):
    import ast
    from importlib.util import find_spec

    tree = ast.parse(open(find_spec(f"lowbit.quant.formats.{family}_triton").origin).read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    assert f"lowbit.quant.formats.{family}_layout" in imported
    assert f"lowbit.quant.formats.{family}" not in imported


def test_the_transformers_predictor_validates_formats_once_by_their_canonical_names():
    from lowbit.predictors.transformers import _check_quant_options

    options = _check_quant_options("NVFP4", "w4a16_g32", None, None)
    assert (options["act_quant"], options["weight_quant"]) == ("nvfp4", "int4_g32")
    with pytest.raises(UsageError, match=r"^predictor_conf.act_quant 'int4' is unknown: choose one of none, int8,"):
        _check_quant_options("int4", "none", None, None)
