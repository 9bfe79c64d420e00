"""RULER (Hsieh et al., 2024): synthetic long-context tasks generated at any token length for a given tokenizer.

Eleven tasks: eight needle-in-a-haystack variants (niah.py), variable tracking (variable_tracking.py), common
and frequent words extraction (common_words.py, frequent_words.py), configured as NVIDIA RULER (templates.py).
Prompts are fitted to max_seq_length minus each task's answer budget in the model's chat-templated tokens
(tokens.py); `lowbit ruler prepare` (cli.py) freezes them into a folder with a manifest (dataset.py); the eval
tasks ruler-<task>-<length> (task.py) read such a folder, the prebuilt hub dataset, or a cached generation, and
score with string_match_all (scoring.py).
"""
