"""Maximum-inner-product vectors for NCF's first retrieval stage over a large catalog (``RetrievalSpace``).

- **GMF**: the logit is ``(p_u ⊙ w_gmf) · q_i + b``, an inner product: exact, no second stage needed.
- **MLP** (and NeuMF's MLP branch): the tower ``t(U_u + I_i)`` (``U``/``I`` the per-user and per-item halves of the
  first layer, ``FastScorer``) is not an inner product. A ReLU network is piecewise linear, so around user ``u`` it is
  approximated by ``t(U_u + I_i) ≈ c_u + g_u · I_i``, ``g_u`` the tower's gradient averaged over a fixed sample of
  items (its average slope for that user); ``c_u`` does not change a user's ranking and is dropped. The query is then
  ``g_u`` and the item vector ``I_i``.
- **NeuMF**: both, concatenated: ``[p_u ⊙ w_gmf ; g_u] · [q_i ; I_i]``.

Approximate spaces only choose candidates; the serving code rescores them with the exact network.
"""

from __future__ import annotations

import numpy as np
import torch

from recsys.models.base import RetrievalSpace
from recsys.models.ncf.net import FastScorer

SAMPLE_ITEMS = 256  # items the tower's slope is averaged over (fixed seed: the same space on every load)
_PAIRS_PER_CHUNK = 1 << 16


def retrieval_space(scorer: FastScorer, seed: int = 0) -> RetrievalSpace:
    parts = []
    if scorer.user_gmf is not None:
        parts.append(scorer.item_gmf.float().cpu().numpy())
    if scorer.model_type == "gmf":
        user_gmf = scorer.user_gmf

        def gmf_queries(users: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return user_gmf[_index(users, user_gmf.device)].float().cpu().numpy()

        return RetrievalSpace(parts[0], gmf_queries, exact=True)
    n_items = scorer.item_proj.shape[0]
    generator = np.random.default_rng(seed)
    sample = generator.choice(n_items, size=min(SAMPLE_ITEMS, n_items), replace=False)
    sample_proj = scorer.item_proj[torch.from_numpy(np.sort(sample)).to(scorer.item_proj.device)]
    parts.append(scorer.item_proj.float().cpu().numpy())
    items = parts[0] if len(parts) == 1 else np.ascontiguousarray(np.concatenate(parts, axis=1))

    def queries(users: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            index = _index(users, scorer.item_proj.device)
            slope = mean_slope(scorer, scorer.user_proj[index], sample_proj)
            if scorer.user_gmf is not None:
                slope = torch.cat([scorer.user_gmf[index], slope], dim=1)
            return slope.float().cpu().numpy()

    return RetrievalSpace(items, queries, exact=False)


def mean_slope(scorer: FastScorer, user_proj: torch.Tensor, sample_proj: torch.Tensor) -> torch.Tensor:
    """(n, h1): for each user, the gradient of the MLP tower with respect to its first-layer pre-activation, averaged
    over the sample items (backpropagation written out: the layers are Linear + ReLU, the last one a dot product)."""
    out = torch.empty_like(user_proj)
    step = max(1, _PAIRS_PER_CHUNK // max(1, len(sample_proj)))
    w_out = scorer.w_mlp[:, 0]
    for start in range(0, len(user_proj), step):
        pre = [user_proj[start : start + step, None, :] + sample_proj[None, :, :]]  # (c, S, h1)
        x = torch.relu(pre[0])
        for weight, bias in scorer.rest:
            pre.append(x @ weight + bias)
            x = torch.relu(pre[-1])
        grad = w_out * (pre[-1] > 0)
        for (weight, _), before in zip(reversed(scorer.rest), reversed(pre[:-1])):
            grad = (grad @ weight.t()) * (before > 0)
        out[start : start + step] = grad.mean(dim=1)
    return out


def _index(users: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(users, dtype=np.int64)).to(device)
