"""A token trie over scoring continuations, and the packed batch that scores it.

Exact scoring of K continuations needs the next-token distribution after the
prompt and after every *non-final* prefix of every continuation; nothing else.
The trie's nodes are exactly those distinct prefixes, so one forward pass over
``prompt + trie tokens`` with a tree-shaped attention mask computes every
probability we need (the trick llama.cpp uses to score HellaSwag endings).

This module is pure tensor bookkeeping and never touches a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ContinuationTrie:
    """Trie nodes and the gather plan that turns per-node log-softmax rows into scores.

    Logit rows are numbered as the packed forward returns them: row 0 is the
    prompt's last position, row 1 + j is trie node j.
    """

    continuations: tuple[tuple[int, ...], ...]
    node_tokens: torch.Tensor  # [T] token id fed at each node
    node_depth: torch.Tensor  # [T] depth >= 1 (depth 1 = first continuation token)
    visible: torch.Tensor  # [T, T] bool: node i attends to node j (ancestor or self)
    gather_row: torch.Tensor  # [M] logit row holding each scored token's distribution
    gather_token: torch.Tensor  # [M] the scored token id
    gather_owner: torch.Tensor  # [M] continuation index the token belongs to
    final_row: torch.Tensor | None  # [K] row after the full continuation (word-boundary mode)

    @property
    def num_nodes(self) -> int:
        return int(self.node_tokens.numel())

    @property
    def max_depth(self) -> int:
        return max(len(ids) for ids in self.continuations)

    @classmethod
    def build(cls, continuations: Sequence[Sequence[int]], *, include_final: bool = False) -> "ContinuationTrie":
        """Nodes are the distinct non-final prefixes; with `include_final`, full continuations too."""
        continuations = tuple(tuple(int(t) for t in ids) for ids in continuations)
        if any(len(ids) == 0 for ids in continuations):
            raise ValueError("every continuation must have at least one token")
        node_of: dict[tuple[int, ...], int] = {}
        prefixes: list[tuple[int, ...]] = []
        for ids in continuations:
            last = len(ids) if include_final else len(ids) - 1
            for end in range(1, last + 1):
                prefix = ids[:end]
                if prefix not in node_of:
                    node_of[prefix] = len(prefixes)
                    prefixes.append(prefix)
        num_nodes = len(prefixes)
        visible = torch.zeros(num_nodes, num_nodes, dtype=torch.bool)
        for i, prefix in enumerate(prefixes):
            for end in range(1, len(prefix) + 1):
                visible[i, node_of[prefix[:end]]] = True
        rows, tokens, owners = [], [], []
        for k, ids in enumerate(continuations):
            for position, token in enumerate(ids):
                rows.append(0 if position == 0 else 1 + node_of[ids[:position]])
                tokens.append(token)
                owners.append(k)
        final_row = torch.tensor([1 + node_of[ids] for ids in continuations]) if include_final else None
        return cls(
            continuations=continuations,
            node_tokens=torch.tensor([p[-1] for p in prefixes], dtype=torch.long),
            node_depth=torch.tensor([len(p) for p in prefixes], dtype=torch.long),
            visible=visible,
            gather_row=torch.tensor(rows, dtype=torch.long),
            gather_token=torch.tensor(tokens, dtype=torch.long),
            gather_owner=torch.tensor(owners, dtype=torch.long),
            final_row=final_row,
        )

    def reduce(self, logprob_rows: torch.Tensor) -> torch.Tensor:
        """Sum token log-probs into continuation log-probs.

        `logprob_rows` is [B, 1 + T, V] (log-softmax at the prompt's last position
        and at every node); returns [B, K].
        """
        picked = logprob_rows[:, self.gather_row, self.gather_token]  # [B, M]
        totals = torch.zeros(picked.shape[0], len(self.continuations), dtype=picked.dtype, device=picked.device)
        return totals.index_add_(1, self.gather_owner.to(picked.device), picked)


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor  # [B, S]
    position_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, 1, S, S] bool, True = may attend
    rows_to_keep: int  # the last `rows_to_keep` positions are the prompt's end + trie nodes


@dataclass(frozen=True)
class LeftPadded:
    input_ids: torch.Tensor  # [B, W], padding on the left
    attention_mask: torch.Tensor  # [B, W] long, 1 = real token
    position_ids: torch.Tensor  # [B, W], 0..L-1 over each row's real tokens (0 on padding)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> LeftPadded:
    """Right-align token rows so every row's last token sits in the last column.

    Explicit position ids keep each real token where it would be without padding.
    """
    width = max(len(ids) for ids in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return LeftPadded(input_ids, attention_mask, (attention_mask.cumsum(-1) - 1).clamp(min=0))


def pack_prompts_with_trie(prompt_ids: Sequence[Sequence[int]], trie: ContinuationTrie, pad_id: int) -> PackedBatch:
    """Left-pad prompts to a common length and append the trie's tokens to every row.

    Left padding keeps the trie at the same columns in every row, so the model
    computes logits for one contiguous block. Padding shifts nothing because
    every real token gets an explicit position id: prompt tokens 0..L-1, and a
    node at depth d sits at L + d - 1, as if its path followed the prompt alone.
    """
    prompts = left_pad(prompt_ids, pad_id)
    batch, prompt_width = prompts.input_ids.shape
    num_nodes = trie.num_nodes
    width = prompt_width + num_nodes
    input_ids = torch.cat([prompts.input_ids, trie.node_tokens[None, :].expand(batch, -1)], dim=1)
    is_real = prompts.attention_mask.bool()  # [B, P]
    lengths = prompts.attention_mask.sum(-1)
    node_positions = lengths[:, None] + trie.node_depth[None, :] - 1
    position_ids = torch.cat([prompts.position_ids, node_positions], dim=1)

    mask = torch.zeros(batch, width, width, dtype=torch.bool)
    causal = torch.ones(prompt_width, prompt_width, dtype=torch.bool).tril()
    mask[:, :prompt_width, :prompt_width] = causal[None] & is_real[:, None, :]
    # A padding query that may see nothing would make softmax NaN; let it see itself.
    diagonal = torch.arange(prompt_width)
    mask[:, diagonal, diagonal] = True
    mask[:, prompt_width:, :prompt_width] = is_real[:, None, :]
    mask[:, prompt_width:, prompt_width:] = trie.visible[None]
    return PackedBatch(input_ids, position_ids, mask[:, None], rows_to_keep=num_nodes + 1)


def trie_paths(trie: ContinuationTrie) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """Decompose the trie into root-to-leaf token paths (for the KV-cache fallback).

    Returns the token paths, and for each node j the (path, depth - 1) where its
    distribution can be read.
    """
    num_nodes = trie.num_nodes
    depth = trie.node_depth.tolist()
    tokens = trie.node_tokens.tolist()
    parent = [-1] * num_nodes
    for i in range(num_nodes):
        ancestors = [j for j in trie.visible[i].nonzero().flatten().tolist() if depth[j] == depth[i] - 1]
        parent[i] = ancestors[0] if ancestors else -1
    has_child = {p for p in parent if p >= 0}
    paths: list[list[int]] = []
    node_path = np.zeros(num_nodes, dtype=np.int64)
    node_step = np.zeros(num_nodes, dtype=np.int64)
    for leaf in (i for i in range(num_nodes) if i not in has_child):
        chain = [leaf]
        while parent[chain[-1]] >= 0:
            chain.append(parent[chain[-1]])
        chain.reverse()
        for step, node in enumerate(chain):
            node_path[node], node_step[node] = len(paths), step
        paths.append([tokens[node] for node in chain])
    return paths, node_path, node_step
