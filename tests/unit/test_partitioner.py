"""The producers' partitioner picks the partition aiokafka's DefaultPartitioner picks."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams.kafka import KafkaCluster, producer_config
from streams.partitioner import KeyPartitioner

COUNTS = (1, 3, 6, 7, 100)


def random_keys(rng: random.Random, n: int) -> list[bytes]:
    """Keys of every length class murmur2 treats apart (0-3 trailing bytes), some repeated."""
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(n)]
    keys += [f"wf-{rng.randrange(10**9)}".encode() for _ in range(n)]
    return keys + keys[: n // 4]


@pytest.mark.parametrize("count", COUNTS)
def test_a_key_goes_where_the_default_partitioner_sends_it(count: int) -> None:
    rng = random.Random(count)
    partitions = list(range(count))
    ours, theirs = KeyPartitioner(cached_keys=64), DefaultPartitioner()
    for key in random_keys(rng, 2000):
        available = rng.sample(partitions, rng.randrange(1, count + 1))
        assert ours(key, partitions, available) == theirs(key, partitions, available), key


@pytest.mark.parametrize("count", COUNTS)
def test_partition_ids_that_are_not_0_to_n_are_indexed_like_the_default(count: int) -> None:
    # all_partitions is indexed, not assumed to be range(n).
    partitions = sorted(random.Random(count).sample(range(1000), count))
    ours, theirs = KeyPartitioner(), DefaultPartitioner()
    for key in random_keys(random.Random(count + 1), 500):
        assert ours(key, partitions, partitions) == theirs(key, partitions, partitions)


def test_a_cached_hash_is_the_same_as_a_fresh_one() -> None:
    ours, partitions = KeyPartitioner(cached_keys=2), list(range(100))
    keys = [f"wf-{i}".encode() for i in range(10)]
    first = [ours(k, partitions, partitions) for k in keys]  # most evicted again
    assert [ours(k, partitions, partitions) for k in keys * 3] == first * 3
    assert [ours(bytearray(k), partitions, partitions) for k in keys] == first


@pytest.mark.parametrize("count", COUNTS)
def test_no_key_goes_to_an_available_partition(count: int) -> None:
    rng, ours = random.Random(count), KeyPartitioner()
    partitions = list(range(count))
    for _ in range(200):
        available = rng.sample(partitions, rng.randrange(1, count + 1))
        assert ours(None, partitions, available) in available
    assert ours(None, partitions, []) in partitions  # none available: any partition


def test_every_producer_gets_it_and_a_caller_can_share_its_own() -> None:
    cluster = KafkaCluster("localhost:9092")
    first = producer_config(cluster, client_id="a", linger_ms=5)["partitioner"]
    second = producer_config(cluster, client_id="b", linger_ms=5)["partitioner"]
    assert isinstance(first, KeyPartitioner)
    assert first is not second  # each producer has its own cache: no shared global state
    mine = KeyPartitioner()
    shared = producer_config(cluster, client_id="c", linger_ms=5, partitioner=mine)
    assert shared["partitioner"] is mine
