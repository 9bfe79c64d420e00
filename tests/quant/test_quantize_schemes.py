"""`lowbit quantize` names schemes from the scheme tables: its help lists them, and a weight format's spelling
names its scheme and group size."""

import json

from lowbit.quant.schemes import SCHEMES


def test_every_scheme_is_in_the_quantize_help():
    from lowbit.quant import quantize_cli
    from lowbit.quant.gptq import COMMAND_NAMES

    listed = set()
    for line in quantize_cli.EPILOG.splitlines():
        for word in line.replace("(", " ").replace(")", " ").split():
            if word.startswith("scheme="):
                listed |= set(word.removeprefix("scheme=").rstrip(":").split("|"))
    assert listed == set(SCHEMES) | set(COMMAND_NAMES)


def test_lowbit_quantize_takes_a_format_spelling_and_records_the_scheme(tiny_model, tmp_path):
    from support import run_lowbit

    out = tmp_path / "q"
    result = run_lowbit("quantize", f"model={tiny_model}", "scheme=int4_g32", f"out={out}")
    assert result.returncode == 0, result.stderr
    recorded = json.loads((out / "config.json").read_text())["quantization_config"]["lowbit"]
    assert (recorded["scheme"], recorded["group_size"]) == ("w4a16", 32)
    clash = run_lowbit("quantize", f"model={tiny_model}", "scheme=w4a16_g32", "group_size=128", f"out={tmp_path / 'x'}")
    assert clash.returncode == 2 and "scheme w4a16_g32 is w4a16 with group_size 32, got group_size 128" in clash.stderr
    assert not (tmp_path / "x").exists()
