"""Quantization: numeric formats (`lowbit.quant.formats`), checkpoints and recipes."""
