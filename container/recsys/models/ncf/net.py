"""The NCF networks (He et al., WWW 2017) and the fast scoring path used for evaluation and serving.

Layout (as in the paper and the widely used guoyang9/NCF code):

- **GMF**: ``p_u ⊙ q_i`` (``factor_num`` each) → predict layer.
- **MLP**: ``[p_u ; q_i]`` with ``p_u, q_i`` of size ``factor_num · 2^(num_layers-1)``; ``num_layers`` blocks of
  (Dropout, Linear halving the width, ReLU), ending at ``factor_num`` → predict layer.
- **NeuMF**: ``[GMF vector ; MLP vector]`` (own embeddings for each part) → one linear predict layer.

The predict layer outputs a logit; training uses binary cross-entropy with logits, scores are logits (monotone in
the predicted probability, so rankings are the same).

``FastScorer`` is the inference path. The MLP's first Linear on ``[p_u ; q_i]`` splits into ``W_u p_u + W_i q_i + b``,
so ``W_i q_i + b`` is computed once per item (``n_items × h1``) when the weights change; a request then costs one
``(n_users × h1)`` projection, a broadcast add, and the remaining (narrower) layers on ``n_users × n_items × h1``.
GMF folds the predict weights into the user side: ``(p_u ⊙ w_gmf) · Q^T`` is one matmul.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

MODEL_TYPES = ("neumf", "gmf", "mlp")
# Scores of this many (user, item) pairs are computed per chunk on the fast path: bounds the (pairs × h1) buffer.
_PAIRS_PER_CHUNK = 1 << 18
_NO_FLOATS = np.zeros(0, dtype=np.float32)  # writeable, as every array top_k_one gets (one compiled signature)
_NO_ROWS = np.zeros((0, 0), dtype=np.float32)


def mlp_embedding_size(factor_num: int, num_layers: int) -> int:
    return factor_num * 2 ** (num_layers - 1)


class NCFNet(nn.Module):
    def __init__(
        self, n_users: int, n_items: int, factor_num: int, num_layers: int, dropout: float, model_type: str
    ) -> None:
        super().__init__()
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        self.model_type = model_type
        self.factor_num = factor_num
        self.num_layers = num_layers
        self.dropout = dropout
        self.has_gmf = model_type in ("gmf", "neumf")
        self.has_mlp = model_type in ("mlp", "neumf")
        if self.has_gmf:
            self.embed_user_gmf = nn.Embedding(n_users, factor_num)
            self.embed_item_gmf = nn.Embedding(n_items, factor_num)
        if self.has_mlp:
            size = mlp_embedding_size(factor_num, num_layers)
            self.embed_user_mlp = nn.Embedding(n_users, size)
            self.embed_item_mlp = nn.Embedding(n_items, size)
            layers: list[nn.Module] = []
            width = 2 * size
            for _ in range(num_layers):
                layers += [nn.Dropout(dropout), nn.Linear(width, width // 2), nn.ReLU()]
                width //= 2
            self.mlp = nn.Sequential(*layers)
        self.predict = nn.Linear(factor_num * (2 if model_type == "neumf" else 1), 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The paper's / guoyang9's initialization: N(0, 0.01) embeddings, Xavier MLP, Kaiming predict layer."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.01)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.kaiming_uniform_(self.predict.weight, a=1, nonlinearity="sigmoid")
        nn.init.zeros_(self.predict.bias)

    def arch(self) -> dict:
        return {
            "n_users": self.embed_user_gmf.num_embeddings if self.has_gmf else self.embed_user_mlp.num_embeddings,
            "n_items": self.embed_item_gmf.num_embeddings if self.has_gmf else self.embed_item_mlp.num_embeddings,
            "factor_num": self.factor_num,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "model_type": self.model_type,
        }

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(n,) user and item indices → (n,) logits. The plain (training) path."""
        if self.has_gmf:
            gmf = self.embed_user_gmf(users) * self.embed_item_gmf(items)
        if self.has_mlp:
            mlp = self.mlp(torch.cat([self.embed_user_mlp(users), self.embed_item_mlp(items)], dim=-1))
        if self.model_type == "gmf":
            vector = gmf
        elif self.model_type == "mlp":
            vector = mlp
        else:
            vector = torch.cat([gmf, mlp], dim=-1)
        return self.predict(vector).squeeze(-1)

    @torch.no_grad()
    def load_pretrained(self, gmf: NCFNet, mlp: NCFNet, alpha: float = 0.5) -> None:
        """NeuMF from trained GMF and MLP (paper §3.4.1): copy embeddings and tower;
        predict = [α·h_gmf, (1-α)·h_mlp]."""
        if self.model_type != "neumf":
            raise ValueError("only NeuMF is initialized from pretrained GMF and MLP")
        self.embed_user_gmf.weight.copy_(gmf.embed_user_gmf.weight)
        self.embed_item_gmf.weight.copy_(gmf.embed_item_gmf.weight)
        self.embed_user_mlp.weight.copy_(mlp.embed_user_mlp.weight)
        self.embed_item_mlp.weight.copy_(mlp.embed_item_mlp.weight)
        self.mlp.load_state_dict(mlp.mlp.state_dict())
        self.predict.weight.copy_(torch.cat([alpha * gmf.predict.weight, (1 - alpha) * mlp.predict.weight], dim=1))
        self.predict.bias.copy_(alpha * gmf.predict.bias + (1 - alpha) * mlp.predict.bias)

    def item_vectors(self) -> torch.Tensor:
        parts = []
        if self.has_gmf:
            parts.append(self.embed_item_gmf.weight)
        if self.has_mlp:
            parts.append(self.embed_item_mlp.weight)
        return torch.cat(parts, dim=1)


class FastScorer:
    """Inference over precomputed per-item tensors (see the module docstring). Built from a network's current
    weights (dropout off); rebuild it when the weights change (``NCFRecommender`` tracks tensor versions)."""

    def __init__(self, net: NCFNet) -> None:
        with torch.no_grad():
            self.model_type = net.model_type
            predict_w = net.predict.weight.detach()[0]
            self.bias = net.predict.bias.detach().clone()
            f = net.factor_num
            self.user_gmf = self.item_gmf = self._item_gmf_t = None
            if net.has_gmf:
                w_gmf = predict_w[:f]
                # (p_u ⊙ w) · q_i: fold the predict weights into the user table once.
                self.user_gmf = (net.embed_user_gmf.weight.detach() * w_gmf).contiguous()
                self.item_gmf = net.embed_item_gmf.weight.detach()
            if net.has_mlp:
                linears = [m for m in net.mlp if isinstance(m, nn.Linear)]
                first = linears[0]
                size = net.embed_user_mlp.embedding_dim
                w_user, w_item = first.weight.detach()[:, :size], first.weight.detach()[:, size:]
                # Per-user and per-item halves of the first layer: h1 = relu(U[u] + I[i]).
                self.user_proj = (net.embed_user_mlp.weight.detach() @ w_user.t()).contiguous()
                self.item_proj = torch.addmm(first.bias.detach(), net.embed_item_mlp.weight.detach(), w_item.t())
                self.rest = [(m.weight.detach().t().contiguous(), m.bias.detach().clone()) for m in linears[1:]]
                w_mlp = predict_w[f:] if net.has_gmf else predict_w
                self.w_mlp = w_mlp.reshape(-1, 1).contiguous()
        self._item_proj_t = None
        self._np: dict | None = None
        self._kernel: dict | None = None

    @property
    def item_gmf_t(self) -> torch.Tensor:
        """(f, n_items), contiguous, for ``score_all``'s matmul; built at its first use (a two-stage server over a
        large catalog never scores every item, and this copy is 128 MB at 1M items × 32 factors)."""
        if self._item_gmf_t is None:
            self._item_gmf_t = self.item_gmf.t().contiguous()
        return self._item_gmf_t

    @property
    def item_proj_t(self) -> torch.Tensor:
        """(h1, n_items), contiguous, for ``score_user``; built at its first use."""
        if self._item_proj_t is None:
            self._item_proj_t = self.item_proj.t().contiguous()
        return self._item_proj_t

    def _tower(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (..., h1) pre-activation of layer 1 → (...,) the MLP part of the logit."""
        shape = hidden.shape[:-1]
        x = torch.relu_(hidden).reshape(-1, hidden.shape[-1])
        for weight, bias in self.rest:
            x = torch.relu_(torch.addmm(bias, x, weight))
        return (x @ self.w_mlp).reshape(shape)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(n,) users → (n, n_items) logits."""
        out = None
        if self.user_gmf is not None:
            out = torch.addmm(self.bias, self.user_gmf[users], self.item_gmf_t)
        if self.model_type == "gmf":
            return out
        n_items = self.item_proj.shape[0]
        mlp = torch.empty((len(users), n_items), dtype=self.item_proj.dtype, device=self.item_proj.device)
        user_proj = self.user_proj[users]
        step = max(1, _PAIRS_PER_CHUNK // max(1, n_items))
        for start in range(0, len(users), step):
            chunk = user_proj[start : start + step]
            mlp[start : start + step] = self._tower(chunk[:, None, :] + self.item_proj[None, :, :])
        return mlp + self.bias if out is None else out.add_(mlp)

    def score_user(self, user: int) -> np.ndarray:
        """One user against every item, on the CPU: (n_items,) float32 logits, equal to ``score_all``'s row.

        The single-user request is what an endpoint mostly answers, and there a torch call's fixed cost (several
        microseconds each) outweighs the arithmetic (~50K multiply-adds per table on ml-100k). So this path runs in
        numpy on item-major views of the same tensors (no copies): every layer is one BLAS product over (h, n_items)
        activations, with no broadcast copies or reshapes — about half the time of ``score_all`` on one user. Items
        go in column chunks of ``_PAIRS_PER_CHUNK``."""
        v = self._views()
        n_items = v["item_proj_t"].shape[1] if "item_proj_t" in v else v["item_gmf_t"].shape[1]
        out = np.full(n_items, v["bias"], dtype=np.float32)
        if "user_gmf" in v:
            out += v["user_gmf"][user] @ v["item_gmf_t"]
        if "item_proj_t" not in v:
            return out
        user_col = v["user_proj"][user][:, None]
        for start in range(0, n_items, _PAIRS_PER_CHUNK):
            cols = slice(start, start + _PAIRS_PER_CHUNK)
            x = np.add(v["item_proj_t"][:, cols], user_col)
            torch.relu_(torch.from_numpy(x))  # numpy's maximum(x, 0) is several times slower
            for weight, bias in v["rest_t"]:
                x = weight @ x
                x += bias
                torch.relu_(torch.from_numpy(x))
            out[cols] += v["w_mlp"] @ x
        return out

    def top_k_one(self, user: int, k: int, banned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One user's ``k`` best items over every item, best first, none of ``banned`` (int64 indices): one compiled
        call on the CPU tensors (``recsys.models.kernels``); scores equal ``score_user``'s up to rounding."""
        from recsys.models.kernels import top_k_one

        a = self._kernel_args()
        user_gmf = a["user_gmf"][user] if a["user_gmf"] is not None else _NO_FLOATS
        user_proj = a["user_proj"][user] if a["user_proj"] is not None else _NO_FLOATS
        return top_k_one(
            user_gmf, a["item_gmf"], user_proj, a["item_proj"], a["tower"], a["shapes"], a["w_mlp"], a["bias"],
            a["n_items"], banned, k,
        )  # fmt: skip

    def _kernel_args(self) -> dict:
        """numpy views of the CPU tensors ``top_k_one`` reads (item-major, as the tables are stored) and the tower's
        layers packed into one array; built once. The part a model lacks (GMF or MLP) gets zero-width arrays."""
        if self._kernel is None:
            args: dict = {"bias": float(self.bias[0]), "user_gmf": None, "item_gmf": _NO_ROWS, "user_proj": None}
            args.update(item_proj=_NO_ROWS, tower=_NO_FLOATS, shapes=np.zeros((0, 2), dtype=np.int64), w_mlp=_NO_FLOATS)
            if self.user_gmf is not None:
                args.update(user_gmf=self.user_gmf.numpy(), item_gmf=self.item_gmf.contiguous().numpy())
            if self.model_type != "gmf":
                args.update(user_proj=self.user_proj.numpy(), item_proj=self.item_proj.contiguous().numpy())
                # self.rest holds (W^T (in, out), b): pack W (out, in) row-major, then b, layer after layer
                parts = [p for w, b in self.rest for p in (w.t().contiguous().reshape(-1), b.reshape(-1))]
                if parts:
                    args["tower"] = torch.cat(parts).numpy()
                    args["shapes"] = np.array([tuple(w.shape) for w, _ in self.rest], dtype=np.int64)
                args["w_mlp"] = self.w_mlp[:, 0].contiguous().numpy()
            args["n_items"] = (self.item_gmf if self.user_gmf is not None else self.item_proj).shape[0]
            self._kernel = args
        return self._kernel

    def _views(self) -> dict:
        """numpy views (shared memory) of the CPU tensors ``score_user`` reads; built once."""
        if self._np is None:
            views: dict = {"bias": float(self.bias[0])}
            if self.user_gmf is not None:
                views.update(user_gmf=self.user_gmf.numpy(), item_gmf_t=self.item_gmf_t.numpy())
            if self.model_type != "gmf":
                views.update(user_proj=self.user_proj.numpy(), item_proj_t=self.item_proj_t.numpy())
                # the layers for item-major activations (h, n_items): x ← relu(W x + b)
                views["rest_t"] = [(np.ascontiguousarray(w.numpy().T), b.numpy()[:, None]) for w, b in self.rest]
                views["w_mlp"] = self.w_mlp[:, 0].numpy()
            self._np = views
        return self._np

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(n,) users, (n, m) items → (n, m) logits."""
        out = None
        if self.user_gmf is not None:
            # (n, 1, f) @ (n, f, m) → (n, m)
            out = torch.bmm(self.user_gmf[users][:, None, :], self.item_gmf[items].transpose(1, 2))[:, 0, :]
            out += self.bias
        if self.model_type == "gmf":
            return out
        n, m = items.shape
        mlp = torch.empty((n, m), dtype=self.item_proj.dtype, device=self.item_proj.device)
        user_proj = self.user_proj[users]
        step = max(1, _PAIRS_PER_CHUNK // max(1, m))
        for start in range(0, n, step):
            rows = slice(start, start + step)
            mlp[rows] = self._tower(user_proj[rows][:, None, :] + self.item_proj[items[rows]])
        return mlp + self.bias if out is None else out.add_(mlp)
