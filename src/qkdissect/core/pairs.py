"""The score of a passage for one mode (text, beyond the paper): the best query-key pair the model can attend over.

The image score (paper 1.6) is ``max_t q_t * max_t k_t``. For text the query and key tokens must also be a pair
the model can attend over: for a decoder (causal) key j <= query i. With ``q_t = x_t . u`` and ``k_t = x_t . v``
the score is ``max over allowed (i, j) of [q_i]_+ [k_j]_+`` (sign "+"), and the same with -u, -v (sign "-").
For an encoder this is the image score whenever the maxima are positive.
"""

from __future__ import annotations

import torch


def pair_scores(
    q: torch.Tensor, k: torch.Tensor, keep: torch.Tensor, causal: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best pair per row: q, k (batch, c, token) with tokens last (contiguous), ``keep`` (batch, token) the tokens
    that count; returns the score ``max over kept (i, j) of [q_i]_+ [k_j]_+`` (batch, c) and its query position i
    and key position j (batch, c), always kept tokens (when a passage has one). Causal: j <= i, through the
    running maximum of the keys (one ``cummax`` along the last dimension, no loop over tokens)."""
    drop = ~keep[:, None, :]
    qp = q.clamp(min=0).masked_fill_(drop, -1.0)  # -1: never chosen over a kept token
    kp = k.clamp(min=0).masked_fill_(drop, -1.0)
    if causal:
        k_run, k_at = torch.cummax(kp, dim=-1)
        prod = (qp * k_run).masked_fill_(drop | (k_run < 0), -1.0)
        best, i = prod.max(dim=-1)
        j = k_at.gather(-1, i[..., None]).squeeze(-1)
        return best.clamp_(min=0), i, j
    q_best, i = qp.max(dim=-1)
    k_best, j = kp.max(dim=-1)
    return q_best.clamp_(min=0) * k_best.clamp_(min=0), i, j
