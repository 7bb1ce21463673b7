"""What the modes and the biases contribute to real attention logits (beyond the paper).

For the tokens x that feed W_q and W_k (post-norm), every head's unscaled logit splits exactly into

    L_ij = x_i^T W_q^T W_k x_j    (token-token: the modes, sum_n s_n (x_i.u_n)(v_n.x_j))
         + b_q^T W_k x_j          (query bias: a key-only salience term)
         + x_i^T W_q^T b_k        (key bias: constant along a query's row, so the softmax ignores it)
         + b_q^T b_k              (constant)

and the model's pre-softmax logit is ``scale * L``. Statistics, accumulated over images as sums so that they can
be streamed, per (layer, head):

- **variance shares**: ``cov(term, L) / var(L)`` over all (i, j) pairs, and within each query's row (centred over
  j: what the softmax sees); the shares of the four terms sum to 1 exactly.
- **top-k modes**: ``1 - ||T - T_k||^2 / ||T||^2`` within rows, T the token-token term and T_k its first k modes.
- **who wins**: at each query's actual winning key j* (argmax of the full logit), the token-token margin over the
  row mean ``T_ij* - mean_j T_ij`` split into the part from modes with cos(u, v) > 0 and from those with cos < 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

TERMS = ("token", "query_bias", "key_bias", "constant")
SCOPES = ("pairs", "rows")


def logit_terms(
    x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, b_q: torch.Tensor, b_k: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The four terms of the unscaled logit, each broadcastable to (batch, head, token_i, token_j).

    x: (batch, token, d); w_q, w_k: (head, d_head, d); b_q, b_k: (head, d_head)."""
    q0 = torch.einsum("btd,hed->bhte", x, w_q)
    k0 = torch.einsum("btd,hed->bhte", x, w_k)
    return {
        "token": q0 @ k0.transpose(-1, -2),
        "query_bias": torch.einsum("he,bhte->bht", b_q, k0)[:, :, None, :],
        "key_bias": torch.einsum("bhte,he->bht", q0, b_k)[:, :, :, None],
        "constant": torch.einsum("he,he->h", b_q, b_k)[None, :, None, None],
    }


@dataclass
class LogitStats:
    """Streaming sums over images for one layer: per head (and term, scope, k)."""

    n_heads: int
    ks: list[int]
    cov: torch.Tensor = field(init=False)  # (scope, term, head): sum of cov(term, L) numerators
    var: torch.Tensor = field(init=False)  # (scope, head): sum of var(L) numerators
    resid: torch.Tensor = field(init=False)  # (k, head): sum ||T~ - T~_k||^2
    token_sq: torch.Tensor = field(init=False)  # (head,): sum ||T~||^2
    win_pos: torch.Tensor = field(init=False)  # (head,): winning margin from cos > 0 modes
    win_all: torch.Tensor = field(init=False)  # (head,): the whole token-token winning margin

    def __post_init__(self) -> None:
        h = self.n_heads
        z = torch.zeros
        self.cov, self.var = z(len(SCOPES), len(TERMS), h, dtype=torch.float64), z(len(SCOPES), h, dtype=torch.float64)
        self.resid, self.token_sq = z(len(self.ks), h, dtype=torch.float64), z(h, dtype=torch.float64)
        self.win_pos, self.win_all = z(h, dtype=torch.float64), z(h, dtype=torch.float64)

    def update(
        self,
        x: torch.Tensor,
        w_q: torch.Tensor,
        w_k: torch.Tensor,
        b_q: torch.Tensor,
        b_k: torch.Tensor,
        u: torch.Tensor,
        s: torch.Tensor,
        v: torch.Tensor,
    ) -> None:
        """Add a batch of tokens x (batch, token, d); u, v: (head, d, mode); s: (head, mode); all float64.

        Only the full logit L (batch, head, t, t) is materialised (for its winners, sums and sum of squares);
        the bias terms' covariances with L come from L's row and column sums (they are rank one), the token
        term's is the rest (the four add up to var L), and the top-k residuals come from the modes' Gram
        matrices: ||sum_{n in S} a_n k_n^T||^2 = sum_{n, m in S} (a_n . a_m)(k_n . k_m)."""
        t = x.shape[1]
        terms = logit_terms(x, w_q, w_k, b_q, b_k)
        qb = terms["query_bias"][:, :, 0, :]  # (b, h, j)
        kb = terms["key_bias"][..., 0]  # (b, h, i)
        big = terms["token"]
        big += terms["query_bias"]
        big += terms["key_bias"]
        big += terms["constant"]  # the full logit L, in place
        row, col = big.sum(dim=-1), big.sum(dim=-2)  # (b, h, i), (b, h, j)
        sumsq = (big * big).sum(dim=(-2, -1))
        winner = big.argmax(dim=-1)  # (b, h, i): the key each query attends to most
        del big
        var_rows = sumsq - (row * row).sum(dim=-1) / t
        var_pairs = sumsq - row.sum(dim=-1) ** 2 / t**2
        qb_c, kb_c = qb - qb.mean(dim=-1, keepdim=True), kb - kb.mean(dim=-1, keepdim=True)
        cov_q_rows = (qb_c * col).sum(dim=-1)
        cov_q_pairs = cov_q_rows  # sum_j Q^_j colsum_j(L^) = sum_j Q^_j colsum_j(L) in both scopes
        cov_k_pairs = (kb_c * row).sum(dim=-1)
        zero = torch.zeros_like(var_rows)
        rows = [var_rows - cov_q_rows, cov_q_rows, zero, zero]  # order of TERMS
        pairs = [var_pairs - cov_q_pairs - cov_k_pairs, cov_q_pairs, cov_k_pairs, zero]
        self.var[0] += var_pairs.sum(dim=0).cpu()
        self.var[1] += var_rows.sum(dim=0).cpu()
        for ti in range(len(TERMS)):
            self.cov[0, ti] += pairs[ti].sum(dim=0).cpu()
            self.cov[1, ti] += rows[ti].sum(dim=0).cpu()
        a = torch.einsum("btd,hdm->bhtm", x, u) * s[None, :, None, :]  # s_n (x_i . u_n)
        kp = torch.einsum("btd,hdm->bhtm", x, v)  # v_n . x_j
        kc = kp - kp.mean(dim=2, keepdim=True)  # centred over keys j (within rows of the logit)
        gram = (a.transpose(-1, -2) @ a) * (kc.transpose(-1, -2) @ kc)  # (b, h, m, m)
        self.token_sq += gram.sum(dim=(0, 2, 3)).cpu()
        for ki, k in enumerate(self.ks):
            self.resid[ki] += gram[..., k:, k:].sum(dim=(0, 2, 3)).cpu()
        kw = torch.gather(kc, 2, winner[..., None].expand(*winner.shape, kc.shape[-1]))  # (b, h, i, m)
        contrib = a * kw  # per mode: s_n (x_i.u_n)(v_n.x_j* - mean_j v_n.x_j)
        cos = (u * v).sum(dim=1)  # (head, mode)
        self.win_pos += (contrib * (cos > 0)[None, :, None, :]).sum(dim=(0, 2, 3)).cpu()
        self.win_all += contrib.sum(dim=(0, 2, 3)).cpu()

    def shares(self) -> torch.Tensor:
        """(scope, term, head) cov(term, L) / var(L); each (scope, head) sums to 1 over the terms."""
        return self.cov / self.var[:, None, :]

    def explained(self) -> torch.Tensor:
        """(k, head) fraction of the token-token term's within-row variance the first k modes capture."""
        return 1 - self.resid / self.token_sq[None, :]

    def winning_positive_share(self) -> torch.Tensor:
        """(head,) share of the winning keys' token-token margin that comes from modes with cos(u, v) > 0."""
        return self.win_pos / self.win_all


def default_ks(d_head: int) -> list[int]:
    """1, 2, 4, ... up to d_head (d_head included)."""
    ks, k = [], 1
    while k < d_head:
        ks.append(k)
        k *= 2
    return [*ks, d_head]
