"""A KV cache whose full-attention layers are preallocated once and written in place.

transformers' `DynamicLayer` grows by `torch.cat` on every decoded token, so each step copies the whole
cache of every layer (O(L^2) bytes over a completion). `GrowingLayer` keeps a buffer with room for the
prompt plus the whole completion budget and writes each new key/value into it; the layer's `keys` /
`values` are views of the filled part, so attention sees exactly what a `DynamicLayer` would hold. Rows
dropped from the batch (`batch_select_indices`) and the prefill's expansion to n samples
(`batch_repeat_interleave`) copy the buffer once. Other layer kinds (sliding window, linear attention)
are left as transformers builds them.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` backed by a buffer of `capacity` positions (grown by doubling if ever exceeded)."""

    def __init__(self, capacity: int, **kwargs):
        super().__init__(**kwargs)
        self.capacity = max(1, capacity)
        self._k = self._v = None
        self._n = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._n = 0
        self._k = self._v = None

    def _ensure(self, key_states: torch.Tensor, value_states: torch.Tensor, need: int) -> None:
        if self._k is not None and need <= self._k.shape[-2]:
            return
        cap = max(need, self.capacity if self._k is None else 2 * self._k.shape[-2])
        b, h = key_states.shape[:2]
        k = key_states.new_empty((b, h, cap, key_states.shape[-1]))
        v = value_states.new_empty((b, h, cap, value_states.shape[-1]))
        if self._n:
            k[:, :, :self._n] = self._k[:, :, :self._n]
            v[:, :, :self._n] = self._v[:, :, :self._n]
        self._k, self._v = k, v

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = self._k[:, :, :self._n], self._v[:, :, :self._n]
        return self.keys, self.values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        t = key_states.shape[-2]
        self._ensure(key_states, value_states, self._n + t)
        self._k[:, :, self._n:self._n + t] = key_states
        self._v[:, :, self._n:self._n + t] = value_states
        self._n += t
        return self._views()

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._n:
            self._k, self._v = self._k.repeat_interleave(repeats, dim=0), self._v.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self._n:
            self._k, self._v = self._k[indices], self._v[indices]
            self._views()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.is_initialized and self.keys is not None:
            self._n = self.keys.shape[-2]

    def reset(self) -> None:
        self._k = self._v = None
        self._n = 0
        super().reset()


def preallocated_cache(config, capacity: int) -> DynamicCache:
    """A `DynamicCache` for `config` whose plain full-attention layers are `GrowingLayer(capacity)`."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
