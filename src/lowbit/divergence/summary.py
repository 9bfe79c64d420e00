"""Per-token divergence figures -> per-sequence lines and metrics.json's estimates.

Means over tokens (KL, top-token agreement, log-perplexities, top-token probability change) are ratios of sums
over sequences; their 95% intervals come from a seeded percentile bootstrap that resamples whole sequences, since
the tokens of one sequence are not independent. Quantiles and the maximum are over all scored tokens.
Perplexity is exp of the mean negative log-likelihood of the sequence's own next tokens; the PPL ratio is
candidate / baseline on the same tokens.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lowbit.metrics.stats import BOOTSTRAP_SEED, Estimate

RESAMPLES = 2_000
_CHUNK = 250
QUANTILES = {"kl_median": 0.5, "kl_p90": 0.9, "kl_p99": 0.99, "kl_p999": 0.999}
POSITION_BUCKETS = (0, 128, 512, 2048, 8192)  # bucket starts, in tokens from the sequence start
# summed per sequence: the numerators of the token means
SUMS = ("kl", "same_top", "base_nll", "cand_nll", "top_prob_change", "top_prob_change_sq")


def position_bucket(position: int) -> str:
    starts = [s for s in POSITION_BUCKETS if s <= position]
    start = starts[-1]
    following = POSITION_BUCKETS.index(start) + 1
    return f"{start}-{POSITION_BUCKETS[following] - 1}" if following < len(POSITION_BUCKETS) else f"{start}+"


def sequence_sums(stats: dict[str, np.ndarray]) -> dict[str, float]:
    """The per-sequence sums of one sequence's (or one group's) per-token arrays."""
    change = stats["top_prob_change"].astype(np.float64)
    return {"tokens": int(stats["kl"].size), "kl": float(stats["kl"].sum(dtype=np.float64)),
            "same_top": float(stats["same_top"].sum()), "base_nll": float(stats["base_nll"].sum(dtype=np.float64)),
            "cand_nll": float(stats["cand_nll"].sum(dtype=np.float64)), "top_prob_change": float(change.sum()),
            "top_prob_change_sq": float((change * change).sum())}


def sequence_line(sequence_id: str, stats: dict[str, np.ndarray], regions: list[str]) -> dict[str, Any]:
    sums = sequence_sums(stats)
    n = sums["tokens"]
    line = {"id": sequence_id, "tokens": n, "kl_mean": sums["kl"] / n, "kl_max": float(stats["kl"].max()),
            "same_top_rate": sums["same_top"] / n, "base_nll_mean": sums["base_nll"] / n,
            "cand_nll_mean": sums["cand_nll"] / n, "top_prob_change_mean": sums["top_prob_change"] / n}
    if "kl_error_bound" in stats:
        line["kl_error_bound_mean"] = float(stats["kl_error_bound"].mean(dtype=np.float64))
    if "reference_missing" in stats:
        line["reference_tokens_missing_rate"] = float(stats["reference_missing"].mean(dtype=np.float64))
    labels = np.asarray(regions)
    if len(set(regions)) > 1 or regions[0] != "text":
        line["regions"] = {region: {"tokens": int((labels == region).sum()),
                                    "kl_mean": float(stats["kl"][labels == region].mean(dtype=np.float64))}
                           for region in sorted(set(regions))}
    return line


def _estimate(point: float, replicates: np.ndarray, n: int) -> dict[str, Any]:
    low, high = np.quantile(replicates, [0.025, 0.975])
    return Estimate(point, n, float(replicates.std(ddof=1)) if len(replicates) > 1 else 0.0, float(low), float(high),
                    "sequence_bootstrap").to_json()


def token_mean_estimates(per_sequence: list[dict[str, float]], seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Token-weighted means over the sequences, each with its sequence-bootstrap interval (stderr: the
    replicates' standard deviation)."""
    n = len(per_sequence)
    table = {key: np.array([s[key] for s in per_sequence], dtype=np.float64) for key in ("tokens", *SUMS)}
    tokens = table["tokens"].sum()
    rng = np.random.default_rng(seed)
    draws = {key: np.empty(RESAMPLES) for key in ("kl", "same_top", "base_ppl", "cand_ppl", "ppl_ratio",
                                                   "top_prob_change", "top_prob_change_rms")}
    for start in range(0, RESAMPLES, _CHUNK):
        stop = min(start + _CHUNK, RESAMPLES)
        picks = rng.integers(0, n, size=(stop - start, n))
        count = table["tokens"][picks].sum(1)
        mean = {key: table[key][picks].sum(1) / count for key in SUMS}
        draws["kl"][start:stop] = mean["kl"]
        draws["same_top"][start:stop] = mean["same_top"]
        draws["base_ppl"][start:stop] = np.exp(mean["base_nll"])
        draws["cand_ppl"][start:stop] = np.exp(mean["cand_nll"])
        draws["ppl_ratio"][start:stop] = np.exp(mean["cand_nll"] - mean["base_nll"])
        draws["top_prob_change"][start:stop] = mean["top_prob_change"]
        draws["top_prob_change_rms"][start:stop] = np.sqrt(mean["top_prob_change_sq"])
    point = {key: table[key].sum() / tokens for key in SUMS}
    values = {"kl": point["kl"], "same_top": point["same_top"], "base_ppl": math.exp(point["base_nll"]),
              "cand_ppl": math.exp(point["cand_nll"]), "ppl_ratio": math.exp(point["cand_nll"] - point["base_nll"]),
              "top_prob_change": point["top_prob_change"],
              "top_prob_change_rms": math.sqrt(point["top_prob_change_sq"])}
    names = {"kl": "kl_mean", "same_top": "same_top_rate", "base_ppl": "baseline_ppl", "cand_ppl": "candidate_ppl",
             "ppl_ratio": "ppl_ratio", "top_prob_change": "top_prob_change_mean",
             "top_prob_change_rms": "top_prob_change_rms"}
    return {names[key]: _estimate(float(values[key]), draws[key], n) for key in values}


def summarize(per_sequence_stats: list[dict[str, np.ndarray]], regions: list[list[str]],
              positions: list[np.ndarray]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """metrics.json's `metrics` and `groups` from each sequence's per-token arrays, region labels and positions."""
    metrics = token_mean_estimates([sequence_sums(s) for s in per_sequence_stats])
    kl = np.concatenate([s["kl"] for s in per_sequence_stats]).astype(np.float64)
    metrics.update({name: float(np.quantile(kl, q)) for name, q in QUANTILES.items()})
    metrics["kl_max"] = float(kl.max())
    metrics["tokens"] = int(kl.size)
    metrics["sequences"] = len(per_sequence_stats)
    if "kl_error_bound" in per_sequence_stats[0]:
        bound = np.concatenate([s["kl_error_bound"] for s in per_sequence_stats]).astype(np.float64)
        metrics["kl_error_bound_mean"] = float(bound.mean())
        metrics["kl_error_bound_max"] = float(bound.max())
    if "reference_missing" in per_sequence_stats[0]:
        missing = np.concatenate([s["reference_missing"] for s in per_sequence_stats])
        metrics["reference_tokens_missing_rate"] = float(missing.mean(dtype=np.float64))
    groups: dict[str, dict[str, Any]] = {}
    labelled = {"position": [np.array([position_bucket(int(p)) for p in pos]) for pos in positions],
                "region": [np.asarray(r) for r in regions]}
    for grouping, labels in labelled.items():
        names = sorted({name for per in labels for name in set(per.tolist())},
                       key=lambda g: (int(g.split("-")[0].rstrip("+")) if g[0].isdigit() else 0, g))
        if grouping == "region" and names == ["text"]:
            continue
        for name in names:
            sums = [sequence_sums({k: v[per == name] for k, v in stats.items()})
                    for stats, per in zip(per_sequence_stats, labels) if (per == name).any()]
            estimates = token_mean_estimates(sums)
            groups.setdefault(f"kl_by_{grouping}", {})[name] = {**estimates["kl_mean"],
                                                                "tokens": int(sum(s["tokens"] for s in sums))}
            groups.setdefault(f"same_top_by_{grouping}", {})[name] = estimates["same_top_rate"]
    return metrics, groups
