"""Per-token divergence between a baseline's and a candidate's next-token distributions.

Both models' final hidden states are turned into logits a slice of positions at a time (`POSITIONS_PER_SLICE`
rows of vocabulary-wide float32 work), so a batch's full logits are never materialised, in any dtype.

Exact reference, per position with baseline p and candidate q over the whole vocabulary:
    kl        KL(p || q) = sum_i p_i (log p_i - log q_i)                       (nats)
    same_top  argmax p == argmax q
    base_nll, cand_nll   -log p(target), -log q(target): the next token of the sequence
    top_prob_change      q(t*) - p(t*) for the baseline's top token t*

Stored reference (`TopK`): the baseline's k largest log-probabilities with their token ids, the log of the mass
of every other token (`rest_logmass`, log R) and the target's log-probability. With S the stored ids and
Q = 1 - sum_S q_i, the approximate KL is that of the two distributions coarsened to S and "the rest":
    KL_k = sum_S p_i log(p_i / q_i) + R log(R / Q)
The log-sum inequality gives 0 <= KL - KL_k = R * KL(p_rest / R || q_rest / Q). The unknown rest of p has no
element above m = min_S p_i, so the error is at most the largest value of sum_rest p_i log(p_i / q_i) over
0 <= p_i <= m, sum p_i = R, minus R log(R / Q). The objective is convex in p, so its maximum is at a vertex: mass
m on each of the rest tokens the candidate finds least likely, in ascending order of q, the remainder on the
next one. `error_bound` is that maximum minus R log(R / Q); every other figure is exact in both modes.

A baseline run through vLLM gives the stored reference directly (`TopK.from_top_logprobs`): its prompt
log-probabilities are the k largest with their ids plus the target's own, and R = 1 - sum_S p_i.

Candidate through vLLM (`CandidateTopK`, `partial_stats`): only its k' largest log-probabilities (ids C) and the
target's are known, so q_i is unknown for the stored tokens outside C+ = C u {target}. The two distributions are
coarsened further, to the jointly known tokens J = S n C+ plus "the rest":
    KL_J = sum_J p_i log(p_i / q_i) + P' log(P' / Q'),    P' = R + sum_{S - J} p_i,    Q' = 1 - sum_J q_i
This partition merges cells of the stored one, so by the log-sum inequality KL_J <= KL_k <= KL: still a lower
bound, equal to KL_k where S is inside C+ (`reference_missing` marks the positions where it is not). Q' is taken
as at least the mass of the candidate's returned tokens outside J, which it holds: 1 - sum_J q_i alone cancels
to float32 noise when the candidate puts nearly all its mass on one token, and a Q' too small would overstate
KL. No finite error bound exists without the candidate's whole distribution: a token outside C+ has q_i only
bounded above, and KL grows without limit as such a q_i with p_i > 0 goes to 0. Exact: the candidate's
log-likelihood of the target, and top-token agreement (the candidate's top token is the first of C). The
top-token probability change is exact where t* is in C+; elsewhere q(t*) lies in [0, min_C q_i], and the value
of that interval nearest p(t*) is taken, so the change is never overstated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

POSITIONS_PER_SLICE = 256  # rows of float32 vocabulary-wide work at a time (256 x 152k x 4 B = 156 MB each)
BOUND_TOKENS_MAX = 512  # least-likely rest tokens the bound fills with mass m; beyond, it is looser but holds


@dataclass
class TokenStats:
    """Per position (1-D tensors of one length)."""

    kl: torch.Tensor
    same_top: torch.Tensor  # bool
    base_nll: torch.Tensor
    cand_nll: torch.Tensor
    base_top_prob: torch.Tensor
    top_prob_change: torch.Tensor
    kl_error_bound: torch.Tensor | None = None  # stored reference, candidate's full distribution only
    reference_missing: torch.Tensor | None = None  # bool; candidate's top-k only: some stored token not returned

    @staticmethod
    def cat(parts: list[TokenStats]) -> TokenStats:
        def optional(name: str) -> torch.Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else torch.cat(values)

        return TokenStats(*(torch.cat([getattr(p, name) for p in parts]) for name in
                            ("kl", "same_top", "base_nll", "cand_nll", "base_top_prob", "top_prob_change")),
                          kl_error_bound=optional("kl_error_bound"), reference_missing=optional("reference_missing"))


@dataclass
class TopK:
    """The stored reference of some positions: (n, k) ids and log-probabilities, (n,) rest log-mass and target
    log-probability."""

    ids: torch.Tensor  # int32
    logprobs: torch.Tensor  # float32, descending
    rest_logmass: torch.Tensor  # float32
    target_logprob: torch.Tensor  # float32

    @staticmethod
    def cat(parts: list[TopK]) -> TopK:
        return TopK(*(torch.cat([getattr(p, name) for p in parts]) for name in
                      ("ids", "logprobs", "rest_logmass", "target_logprob")))

    def slice(self, start: int, stop: int) -> TopK:
        return TopK(self.ids[start:stop], self.logprobs[start:stop], self.rest_logmass[start:stop],
                    self.target_logprob[start:stop])

    @staticmethod
    def from_top_logprobs(ids: torch.Tensor, logprobs: torch.Tensor, target_logprob: torch.Tensor) -> TopK:
        """The reference from the k largest log-probabilities alone (vLLM's prompt log-probabilities): the rest's
        log-mass is log(1 - sum_S p_i) (-inf where rounding leaves nothing)."""
        return TopK(ids.int(), logprobs.float(), _rest_mass(logprobs.double()).log().float(), target_logprob.float())


@dataclass
class CandidateTopK:
    """What vLLM returns of the candidate at n positions: (n, k') ids and log-probabilities of its k' most likely
    tokens, descending, and (n,) the target's log-probability."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    target_logprob: torch.Tensor

    @staticmethod
    def cat(parts: list[CandidateTopK]) -> CandidateTopK:
        return CandidateTopK(*(torch.cat([getattr(p, name) for p in parts]) for name in
                               ("ids", "logprobs", "target_logprob")))


def _log_softmax(head: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(head(hidden).float(), dim=-1)


def exact_stats(base_head: torch.nn.Module, base_hidden: torch.Tensor, cand_head: torch.nn.Module,
                cand_hidden: torch.Tensor, targets: torch.Tensor) -> TokenStats:
    """Divergence at each of n positions: hidden states (n, hidden) of each model, targets (n,)."""
    parts = []
    for start in range(0, targets.shape[0], POSITIONS_PER_SLICE):
        rows = slice(start, start + POSITIONS_PER_SLICE)
        lp = _log_softmax(base_head, base_hidden[rows])
        lq = _log_softmax(cand_head, cand_hidden[rows].to(lp.device)).to(lp.device)
        target = targets[rows].to(lp.device).unsqueeze(1)
        kl = (lp.exp() * (lp - lq)).sum(-1).clamp_min(0)  # rounding can leave -1e-9 where p == q
        parts.append(_common(lp.argmax(-1), lp.max(-1).values, lp.gather(1, target).squeeze(1), lq, target, kl))
    return TokenStats.cat(parts)


def top_k_reference(base_head: torch.nn.Module, base_hidden: torch.Tensor, targets: torch.Tensor, k: int) -> TopK:
    """The baseline's stored reference at n positions."""
    parts = []
    for start in range(0, targets.shape[0], POSITIONS_PER_SLICE):
        rows = slice(start, start + POSITIONS_PER_SLICE)
        lp = _log_softmax(base_head, base_hidden[rows])
        top = lp.topk(k, dim=-1)
        rest = lp.scatter(1, top.indices, float("-inf")).logsumexp(-1)
        target = lp.gather(1, targets[rows].to(lp.device).unsqueeze(1)).squeeze(1)
        parts.append(TopK(top.indices.int().cpu(), top.values.cpu(), rest.cpu(), target.cpu()))
    return TopK.cat(parts)


def stored_stats(reference: TopK, cand_head: torch.nn.Module, cand_hidden: torch.Tensor,
                 targets: torch.Tensor) -> TokenStats:
    """Divergence against a stored reference at n positions: KL_k and its error bound (module docstring)."""
    parts = []
    for start in range(0, targets.shape[0], POSITIONS_PER_SLICE):
        rows = slice(start, start + POSITIONS_PER_SLICE)
        lq = _log_softmax(cand_head, cand_hidden[rows])
        ref = reference.slice(start, start + lq.shape[0])
        ids, lp_top = ref.ids.to(lq.device).long(), ref.logprobs.to(lq.device)
        log_rest_p = ref.rest_logmass.to(lq.device)
        lq_top = lq.gather(1, ids)
        lq_rest_masked = lq.scatter(1, ids, float("-inf"))
        log_rest_q = lq_rest_masked.logsumexp(-1)
        rest_p = log_rest_p.exp()
        rest_term = torch.where(rest_p > 0, rest_p * (log_rest_p - log_rest_q), torch.zeros_like(rest_p))
        kl = ((lp_top.exp() * (lp_top - lq_top)).sum(-1) + rest_term).clamp_min(0)
        target = targets[rows].to(lq.device).unsqueeze(1)
        stats = _common(ids[:, 0], lp_top[:, 0], ref.target_logprob.to(lq.device), lq, target, kl)
        stats.kl_error_bound = _error_bound(lp_top[:, -1], rest_p, log_rest_q, lq.scatter(1, ids, float("inf")))
        parts.append(stats)
    return TokenStats.cat(parts)


def partial_stats(reference: TopK, candidate: CandidateTopK, targets: torch.Tensor) -> TokenStats:
    """Divergence against a stored reference from the candidate's top-k' alone: KL_J, a lower bound of KL_k
    (module docstring), and which positions miss some stored token."""
    parts = []
    for start in range(0, targets.shape[0], POSITIONS_PER_SLICE):
        rows = slice(start, start + POSITIONS_PER_SLICE)
        ref = reference.slice(start, start + targets[rows].shape[0])
        stored_ids, cand_ids, target = ref.ids.long(), candidate.ids[rows].long(), targets[rows].long()
        lq_cand, lq_target = candidate.logprobs[rows].double(), candidate.target_logprob[rows].double()
        lp = ref.logprobs.double()
        matches = stored_ids.unsqueeze(2) == cand_ids.unsqueeze(1)  # (n, k, k')
        in_cand = matches.any(-1)
        is_target = stored_ids == target.unsqueeze(1)
        known = in_cand | is_target
        lq = torch.where(in_cand, lq_cand.gather(1, matches.int().argmax(-1)),
                         torch.where(is_target, lq_target.unsqueeze(1), torch.zeros_like(lp)))
        p = lp.exp()
        rest_p = ref.rest_logmass.double().exp() + torch.where(known, torch.zeros_like(p), p).sum(-1)
        # Q' = 1 - sum_J q_i, and at least the mass of the candidate's returned tokens outside J, which float32
        # log-probabilities near 0 (a peaked candidate) can leave unresolved in 1 - sum_J q_i
        rest_q = _rest_mass(torch.where(known, lq, torch.full_like(lq, -torch.inf)))
        target_outside = ~((cand_ids == target.unsqueeze(1)).any(-1) | is_target.any(-1))
        outside_j = (torch.where(matches.any(1), torch.zeros_like(lq_cand), lq_cand.exp()).sum(-1)
                     + torch.where(target_outside, lq_target.exp(), torch.zeros_like(lq_target)))
        rest_q = torch.maximum(rest_q, outside_j).clamp_min(torch.finfo(p.dtype).tiny)
        rest_term = torch.where(rest_p > 0, rest_p * (rest_p.clamp_min(1e-300).log() - rest_q.log()),
                                torch.zeros_like(rest_p))
        kl = (torch.where(known, p * (lp - lq), torch.zeros_like(p)).sum(-1) + rest_term).clamp_min(0)
        top_q = torch.where(known[:, 0], lq[:, 0].exp(), torch.minimum(lq_cand[:, -1].exp(), p[:, 0]))
        parts.append(TokenStats(kl=kl.float(), same_top=cand_ids[:, 0] == stored_ids[:, 0],
                                base_nll=-ref.target_logprob.float(), cand_nll=-lq_target.float(),
                                base_top_prob=p[:, 0].float(), top_prob_change=(top_q - p[:, 0]).float(),
                                reference_missing=~known.all(-1)))
    return TokenStats.cat(parts)


def _rest_mass(log_masses: torch.Tensor) -> torch.Tensor:
    """1 - the sum of the masses along the last dimension, as -expm1(logsumexp) in float64 (no cancellation beyond
    the log-probabilities' own rounding), at least 0."""
    return (-torch.expm1(log_masses.double().logsumexp(-1))).clamp_min(0)


def _error_bound(log_m: torch.Tensor, rest_p: torch.Tensor, log_rest_q: torch.Tensor,
                 lq_rest: torch.Tensor) -> torch.Tensor:
    """max sum_rest p_i log(p_i / q_i) over 0 <= p_i <= m, sum p_i = R, minus R log(R / Q) (module docstring).
    `lq_rest`: the candidate's log-probabilities with the stored ids set to +inf. Beyond BOUND_TOKENS_MAX tokens
    the remaining mass is placed on the last one, which only loosens the bound (log(p/q) grows with p)."""
    m = log_m.exp().double()
    rest_p64 = rest_p.double()
    count = int(min(max(1, int(torch.ceil(rest_p64 / m.clamp_min(1e-300)).max())), BOUND_TOKENS_MAX,
                    lq_rest.shape[1]))
    lowest = (-(-lq_rest).topk(count, dim=-1).values).double()  # ascending log q among the rest tokens
    filled = torch.arange(count, device=m.device, dtype=torch.float64).unsqueeze(0) * m.unsqueeze(1)
    mass = (rest_p64.unsqueeze(1) - filled).clamp(min=0)
    mass = torch.minimum(mass, m.unsqueeze(1))
    mass[:, -1] = (rest_p64 - mass[:, :-1].sum(-1)).clamp_min(0)
    terms = torch.where(mass > 0, mass * (mass.clamp_min(1e-300).log() - lowest), torch.zeros_like(mass))
    bound = terms.sum(-1) - torch.where(rest_p64 > 0, rest_p64 * (rest_p64.clamp_min(1e-300).log()
                                                                     - log_rest_q.double()), torch.zeros_like(m))
    return bound.clamp_min(0).float()


def _common(base_top: torch.Tensor, base_top_logprob: torch.Tensor, base_target_logprob: torch.Tensor,
            lq: torch.Tensor, target: torch.Tensor, kl: torch.Tensor) -> TokenStats:
    base_top_prob = base_top_logprob.exp()
    return TokenStats(
        kl=kl.cpu(),
        same_top=(lq.argmax(-1) == base_top).cpu(),
        base_nll=(-base_target_logprob).cpu(),
        cand_nll=(-lq.gather(1, target).squeeze(1)).cpu(),
        base_top_prob=base_top_prob.cpu(),
        top_prob_change=(lq.gather(1, base_top.unsqueeze(1)).squeeze(1).exp() - base_top_prob).cpu(),
    )
