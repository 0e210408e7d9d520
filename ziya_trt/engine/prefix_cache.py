"""KV-cache reuse for the reference engine, the way TensorRT-LLM and vLLM do it.

The KV of a finished request's prompt and output is kept in fixed-size token blocks, each found again by
a hash of its whole token prefix (its own tokens and its parent block's hash), so a block is only ever
matched after the same tokens in the same order: multi-turn chat, which re-sends its history every turn,
finds the history's blocks and prefills only the new turn. Least-recently-used blocks are evicted under a
memory bound. A hit is also checked token for token, so a hash collision can never give a wrong hit.

Unlike TensorRT-LLM's paged attention, a running request here keeps its KV contiguous in its slot: blocks
are copied into the slot at admission and out of it at release. Pure torch, no model: tested on its own.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass
class Block:
    index: int  # row in the block pool
    tokens: tuple[int, ...]
    parent: bytes  # the previous block's key (b"" for a first block)


def block_key(parent: bytes, tokens: tuple[int, ...]) -> bytes:
    return hashlib.blake2b(parent + b"|" + ",".join(map(str, tokens)).encode(), digest_size=16).digest()


class PrefixCache:
    """``k``/``v`` pools of ``max_blocks`` blocks, each ``(layers, kv_heads, block_tokens, head_dim)``."""

    def __init__(self, block_tokens: int, max_blocks: int, layers: int, kv_heads: int, head_dim: int,
                 dtype=torch.float32):
        if block_tokens < 1 or max_blocks < 1:
            raise ValueError("block_tokens and max_blocks must be at least 1")
        self.block_tokens, self.max_blocks = block_tokens, max_blocks
        shape = (max_blocks, layers, kv_heads, block_tokens, head_dim)
        self.k, self.v = torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()  # least recently used first
        self._free = list(range(max_blocks))[::-1]
        self.counters = {"hit_blocks": 0, "missed_blocks": 0, "stored_blocks": 0, "evicted_blocks": 0}

    @classmethod
    def for_bytes(cls, max_bytes: int, block_tokens: int, layers: int, kv_heads: int, head_dim: int,
                  dtype=torch.float32) -> "PrefixCache":
        per_block = 2 * layers * kv_heads * block_tokens * head_dim * torch.finfo(dtype).bits // 8
        return cls(block_tokens, max(1, max_bytes // per_block), layers, kv_heads, head_dim, dtype)

    @property
    def in_use(self) -> int:
        return len(self._blocks)

    @property
    def nbytes(self) -> int:
        """The memory of the block pool (keys and values)."""
        return 2 * self.k.numel() * self.k.element_size()

    def match(self, ids: list[int]) -> list[Block]:
        """The cached blocks that start ``ids``, in order. At least one token is always left over, for the
        prefill that gives the next token's logits."""
        out, keys, parent, bt = [], [], b"", self.block_tokens
        for start in range(0, (len(ids) - 1) // bt * bt, bt):
            tokens = tuple(ids[start : start + bt])
            key = block_key(parent, tokens)
            block = self._blocks.get(key)
            if block is None or block.tokens != tokens or block.parent != parent:
                break
            out.append(block)
            keys.append(key)
            parent = key
        self._touch(keys)
        self.counters["hit_blocks"] += len(out)
        self.counters["missed_blocks"] += (len(ids) - 1) // bt - len(out)
        return out

    def load(self, blocks: list[Block], k_dst: torch.Tensor, v_dst: torch.Tensor) -> int:
        """Copy blocks into a slot's cache (``(layers, kv_heads, positions, head_dim)``); returns the tokens loaded."""
        bt = self.block_tokens
        for j, b in enumerate(blocks):
            k_dst[:, :, j * bt : (j + 1) * bt] = self.k[b.index]
            v_dst[:, :, j * bt : (j + 1) * bt] = self.v[b.index]
        return len(blocks) * bt

    def store(self, ids: list[int], k_src: torch.Tensor, v_src: torch.Tensor) -> int:
        """Keep the full blocks of ``ids``, whose KV is ``k_src``/``v_src[:, :, :len(ids)]``; returns how many
        new blocks were stored (those already cached are only touched). A sequence longer than the pool
        keeps its first blocks: a block is only found after its parent."""
        keys, parent, bt, stored = [], b"", self.block_tokens, 0
        for start in range(0, len(ids) // bt * bt, bt):
            tokens = tuple(ids[start : start + bt])
            key = block_key(parent, tokens)
            block = self._blocks.get(key)
            if block is None or block.tokens != tokens or block.parent != parent:
                # a colliding block (other tokens, same key) gives up its row to this one
                index = block.index if block is not None else self._take(protect=set(keys))
                if index is None:
                    break
                self.k[index] = k_src[:, :, start : start + bt]
                self.v[index] = v_src[:, :, start : start + bt]
                self._blocks[key] = Block(index, tokens, parent)
                stored += 1
            keys.append(key)
            parent = key
        self._touch(keys)
        self.counters["stored_blocks"] += stored
        return stored

    def _touch(self, chain: list[bytes]) -> None:
        """Mark a chain used, its first block most recently: eviction takes a chain's tail before its head,
        which would leave the tail unreachable."""
        for key in reversed(chain):
            self._blocks.move_to_end(key)

    def _take(self, protect: set[bytes]) -> int | None:
        """A free row, else the least recently used block's outside ``protect``; None if there is none."""
        if self._free:
            return self._free.pop()
        victim = next((k for k in self._blocks if k not in protect), None)
        if victim is None:
            return None
        self.counters["evicted_blocks"] += 1
        return self._blocks.pop(victim).index
