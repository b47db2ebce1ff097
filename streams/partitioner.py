"""The partitioner every phasestream producer uses: aiokafka's, with key hashes remembered.

aiokafka's ``DefaultPartitioner`` hashes each key with a pure-Python murmur2, about a
tenth of a publisher's CPU per event. Our keys repeat (a workflow id for each of its
events), so each hash is computed once and kept in a bounded cache: bounded because the
keys come from producers, and an unbounded cache would grow with every workflow ever seen.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Final

from aiokafka.partitioner import DefaultPartitioner, murmur2

DEFAULT_CACHED_KEYS: Final = 16_384


class KeyPartitioner:
    """Picks exactly the partition ``DefaultPartitioner`` picks, for the same arguments.

    A key goes to ``all_partitions[(murmur2(key) & 0x7fffffff) % len(all_partitions)]``,
    the Java client's rule, so records keyed by one workflow land on one partition
    whichever client (or language) sent them. A record without a key goes to a random
    available partition, as ``DefaultPartitioner`` does it.
    """

    def __init__(self, cached_keys: int = DEFAULT_CACHED_KEYS) -> None:
        self._hash: Callable[[bytes], int] = functools.lru_cache(maxsize=cached_keys)(murmur2)
        self._unkeyed = DefaultPartitioner()

    def __call__(
        self, key: bytes | bytearray | None, all_partitions: Sequence[int], available: Sequence[int]
    ) -> int:
        # aiokafka's signature: ``all_partitions`` sorted by id, ``available`` in no order.
        if key is None:
            return int(self._unkeyed(key, all_partitions, available))
        # A bytearray or memoryview key is not hashable, so it cannot be cached.
        hashed = self._hash(key) if type(key) is bytes else int(murmur2(key))
        return all_partitions[(hashed & 0x7FFFFFFF) % len(all_partitions)]
