"""Per-token divergence figures (lowbit.divergence.kl) against closed forms computed here over the same logits,
and the stored top-k reference against the exact figure within its stated bound."""

import math

import pytest
import torch

from lowbit.divergence import kl, summary

VOCAB, HIDDEN, POSITIONS = 300, 16, 700  # more positions than one slice


def head_and_hidden(scale: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False).requires_grad_(False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, HIDDEN, generator=generator) * scale)
    hidden = torch.randn(POSITIONS, HIDDEN, generator=generator)
    targets = torch.randint(0, VOCAB, (POSITIONS,), generator=generator)
    return head, hidden, targets


def tempered(head: torch.nn.Module, temperature: float) -> torch.nn.Linear:
    scaled = torch.nn.Linear(HIDDEN, VOCAB, bias=False).requires_grad_(False)
    with torch.no_grad():
        scaled.weight.copy_(head.weight / temperature)
    return scaled


def test_identical_models_give_zero_kl_and_full_agreement():
    head, hidden, targets = head_and_hidden(1.0)
    stats = kl.exact_stats(head, hidden, head, hidden, targets)
    assert stats.kl.shape == (POSITIONS,)
    assert torch.all(stats.kl == 0) and bool(stats.same_top.all())
    assert torch.equal(stats.base_nll, stats.cand_nll) and torch.all(stats.top_prob_change == 0)


@pytest.mark.parametrize("temperature", [0.5, 1.3, 3.0])
def test_tempered_candidate_matches_the_closed_form(temperature):
    head, hidden, targets = head_and_hidden(1.0)
    stats = kl.exact_stats(head, hidden, tempered(head, temperature), hidden, targets)
    logits = (hidden @ head.weight.T).double()
    log_p = logits - torch.logsumexp(logits, -1, keepdim=True)
    log_q = logits / temperature - torch.logsumexp(logits / temperature, -1, keepdim=True)
    expected = (log_p.exp() * (log_p - log_q)).sum(-1)
    assert torch.allclose(stats.kl.double(), expected, rtol=1e-4, atol=1e-6)
    assert bool(stats.same_top.all())  # a temperature keeps the order of the logits
    assert torch.allclose(stats.cand_nll.double(), -log_q.gather(1, targets[:, None]).squeeze(1), atol=2e-5)
    top = log_p.argmax(-1, keepdim=True)
    change = log_q.gather(1, top).exp() - log_p.gather(1, top).exp()
    assert torch.allclose(stats.top_prob_change.double(), change.squeeze(1), atol=1e-6)


@pytest.mark.parametrize("scale, k", [(4.0, 8), (4.0, 32), (1.0, 16)])
def test_stored_reference_is_below_exact_and_within_its_bound(scale, k):
    head, hidden, targets = head_and_hidden(scale)
    candidate = tempered(head, 1.2)
    noisy = hidden + 0.3 * torch.randn(hidden.shape, generator=torch.Generator().manual_seed(1))
    exact = kl.exact_stats(head, hidden, candidate, noisy, targets)
    reference = kl.top_k_reference(head, hidden, targets, k)
    approx = kl.stored_stats(reference, candidate, noisy, targets)
    error = exact.kl.double() - approx.kl.double()
    assert torch.all(error >= -1e-5)  # coarsening never raises KL
    assert torch.all(error <= approx.kl_error_bound.double() + 1e-5)
    # every figure other than KL is exact
    assert torch.equal(exact.same_top, approx.same_top)
    assert torch.allclose(exact.base_nll, approx.base_nll, atol=1e-5)
    assert torch.allclose(exact.cand_nll, approx.cand_nll) and torch.allclose(exact.top_prob_change,
                                                                               approx.top_prob_change, atol=1e-6)
    if scale == 4.0 and k == 32:  # peaked distributions: the bound is informative
        assert approx.kl_error_bound.mean() < 0.1 * exact.kl.mean()


def test_bound_holds_when_the_rest_mass_exceeds_the_bounded_token_count(monkeypatch):
    monkeypatch.setattr(kl, "BOUND_TOKENS_MAX", 4)
    head, hidden, targets = head_and_hidden(0.3)  # nearly uniform: the rest needs far more than 4 tokens
    candidate = tempered(head, 0.7)
    exact = kl.exact_stats(head, hidden, candidate, hidden, targets)
    approx = kl.stored_stats(kl.top_k_reference(head, hidden, targets, 2), candidate, hidden, targets)
    assert torch.all(exact.kl.double() - approx.kl.double() <= approx.kl_error_bound.double() + 1e-5)


def test_summary_intervals_and_quantiles():
    import numpy as np

    rng = np.random.default_rng(0)
    sequences = [{"kl": rng.exponential(0.01, n), "same_top": rng.random(n) < 0.9,
                  "base_nll": rng.random(n) + 1, "cand_nll": rng.random(n) + 1.01,
                  "top_prob_change": rng.normal(0, 0.01, n)} for n in (50, 80, 120, 40)]
    positions = [np.arange(1, 1 + len(s["kl"])) * 3 for s in sequences]
    metrics, groups = summary.summarize(sequences, [["text"] * len(s["kl"]) for s in sequences], positions)
    every_kl = np.concatenate([s["kl"] for s in sequences])
    assert metrics["kl_mean"]["value"] == pytest.approx(every_kl.mean())
    assert metrics["kl_mean"]["ci_low"] < metrics["kl_mean"]["value"] < metrics["kl_mean"]["ci_high"]
    assert metrics["kl_p99"] == pytest.approx(np.quantile(every_kl, 0.99)) and metrics["kl_max"] == every_kl.max()
    base = np.concatenate([s["base_nll"] for s in sequences]).mean()
    cand = np.concatenate([s["cand_nll"] for s in sequences]).mean()
    assert metrics["ppl_ratio"]["value"] == pytest.approx(math.exp(cand - base))
    assert list(groups["kl_by_position"]) == ["0-127", "128-511"] and "kl_by_region" not in groups
    assert sum(g["tokens"] for g in groups["kl_by_position"].values()) == every_kl.size


def test_position_buckets():
    assert [summary.position_bucket(p) for p in (0, 127, 128, 2047, 9000)] == ["0-127", "0-127", "128-511",
                                                                                 "512-2047", "8192+"]


def candidate_top(head, hidden, targets, k):
    """What vLLM returns of a candidate: its k most likely tokens and the target's log-probability."""
    lq = torch.log_softmax(head(hidden).float(), -1)
    top = lq.topk(k, dim=-1)
    return kl.CandidateTopK(top.indices.int(), top.values, lq.gather(1, targets[:, None]).squeeze(1))


def candidate_case(scale, k):
    head, hidden, targets = head_and_hidden(scale)
    candidate = tempered(head, 1.2)
    noisy = hidden + 0.3 * torch.randn(hidden.shape, generator=torch.Generator().manual_seed(1))
    return (kl.exact_stats(head, hidden, candidate, noisy, targets), kl.top_k_reference(head, hidden, targets, k),
            kl.stored_stats(kl.top_k_reference(head, hidden, targets, k), candidate, noisy, targets),
            candidate, noisy, targets)


@pytest.mark.parametrize("scale, k, k_candidate", [(4.0, 8, 8), (4.0, 8, 16), (1.0, 16, 24), (4.0, 32, 64)])
def test_candidate_top_k_gives_a_lower_bound_of_the_stored_kl(scale, k, k_candidate):
    exact, reference, stored, candidate, noisy, targets = candidate_case(scale, k)
    top = candidate_top(candidate, noisy, targets, k_candidate)
    partial = kl.partial_stats(reference, top, targets)
    assert torch.all(partial.kl.double() <= stored.kl.double() + 1e-5)  # coarser than the stored partition
    assert torch.all(partial.kl.double() <= exact.kl.double() + 1e-5)
    known = torch.tensor([set(s.tolist()) <= set(c.tolist()) | {t}
                          for s, c, t in zip(reference.ids, top.ids, targets.tolist())])
    assert torch.equal(partial.reference_missing, ~known)
    assert 0 < int(known.sum()) < POSITIONS or k_candidate > k  # the case mixes both kinds of position
    assert torch.allclose(partial.kl[known], stored.kl[known], rtol=1e-4, atol=1e-5)  # S inside C: KL_k itself
    assert partial.kl_error_bound is None
    # exact: top-token agreement, both log-likelihoods; the top-token change where t* was returned, never
    # overstated where it was not
    assert torch.equal(partial.same_top, exact.same_top)
    assert torch.allclose(partial.cand_nll, exact.cand_nll, atol=1e-5)
    assert torch.allclose(partial.base_nll, exact.base_nll, atol=1e-5)
    top_known = torch.tensor([s[0].item() in set(c.tolist()) | {t} for s, c, t in
                              zip(reference.ids, top.ids, targets.tolist())])
    assert torch.allclose(partial.top_prob_change[top_known], exact.top_prob_change[top_known], atol=1e-6)
    assert torch.all(partial.top_prob_change.abs() <= exact.top_prob_change.abs() + 1e-6)


def test_candidate_returning_every_token_gives_the_stored_kl_everywhere():
    exact, reference, stored, candidate, noisy, targets = candidate_case(4.0, 8)
    partial = kl.partial_stats(reference, candidate_top(candidate, noisy, targets, VOCAB), targets)
    assert not bool(partial.reference_missing.any())
    assert torch.allclose(partial.kl, stored.kl, rtol=1e-4, atol=1e-5)
    assert torch.allclose(partial.top_prob_change, exact.top_prob_change, atol=1e-6)


def test_reference_from_top_logprobs_alone_matches_the_full_distributions():
    head, hidden, targets = head_and_hidden(4.0)
    full = kl.top_k_reference(head, hidden, targets, 16)
    from_top = kl.TopK.from_top_logprobs(full.ids, full.logprobs, full.target_logprob)
    assert torch.equal(from_top.ids, full.ids) and torch.equal(from_top.logprobs, full.logprobs)
    rest = full.rest_logmass.exp()
    assert torch.allclose(from_top.rest_logmass.exp(), rest, atol=1e-6)
    assert torch.allclose(from_top.rest_logmass[rest > 1e-3], full.rest_logmass[rest > 1e-3], atol=1e-3)
    rounded_over_one = torch.tensor([[math.log(0.75), math.log(0.2500001)]])
    nothing_left = kl.TopK.from_top_logprobs(torch.tensor([[0, 1]]), rounded_over_one, torch.tensor([0.0]))
    assert nothing_left.rest_logmass.item() == -math.inf


def test_missing_rate_in_the_summary():
    import numpy as np

    sequences = [{"kl": np.full(n, 0.01), "same_top": np.ones(n, bool), "base_nll": np.ones(n),
                  "cand_nll": np.ones(n), "top_prob_change": np.zeros(n), "reference_missing": np.arange(n) < missing}
                 for n, missing in ((10, 3), (30, 0))]
    metrics, _ = summary.summarize(sequences, [["text"] * 10, ["text"] * 30], [np.arange(1, 11), np.arange(1, 31)])
    assert metrics["reference_tokens_missing_rate"] == pytest.approx(3 / 40)
    assert summary.sequence_line("a", sequences[0], ["text"] * 10)["reference_tokens_missing_rate"] == 0.3
