"""Prefix-sharing workloads: hashes shared exactly as designed, growing sessions."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.describe import ideal_prefix_reuse
from workloads.lengths import Fixed, Uniform
from workloads.prefix_gen import (
    few_shot_templates,
    multi_turn_sessions,
    shared_system_prompts,
)

ARRIVALS = np.arange(40, dtype=float)


def common(a: tuple, b: tuple) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def test_one_system_prompt_shared_by_all():
    # 70 system tokens = 4 full blocks of 16 + 6 tokens that share a block with user tokens
    t = shared_system_prompts(ARRIVALS, n_prompts=1, system_tokens=70, user_tokens=Uniform(1, 90),
                              output_tokens=5, seed=1)
    assert t.block_size == 16 and t.output_tokens.tolist() == [5] * 40
    h = t.prefix_hashes
    assert all(len(x) == p // 16 for x, p in zip(h, t.prompt_tokens.tolist(), strict=True))
    assert (t.prompt_tokens > 70).all()
    long = [x for x in h if len(x) > 4]
    assert all(x[:4] == h[0][:4] for x in h)
    assert all(common(a, b) == 4 for i, a in enumerate(long) for b in long[i + 1:])


def test_two_prompts_zipf_groups():
    t = shared_system_prompts(ARRIVALS, n_prompts=2, system_tokens=[32, 48], user_tokens=20,
                              output_tokens=1, popularity="zipf", seed=2)
    groups = {}
    for x, p in zip(t.prefix_hashes, t.prompt_tokens.tolist(), strict=True):
        groups.setdefault(x[0], []).append((x, p))
    assert len(groups) == 2
    for rows in groups.values():
        shared = 2 if rows[0][1] == 52 else 3  # 32 or 48 system tokens
        assert {p for _, p in rows} == {32 + 20 if shared == 2 else 48 + 20}
        for i, (a, _) in enumerate(rows):
            for b, _ in rows[i + 1:]:
                assert common(a, b) == shared
    a, b = groups.values()
    assert common(a[0][0], b[0][0]) == 0
    counts = t.meta["prompt_counts"]
    assert sum(counts) == 40 and counts[0] > counts[1]  # Zipf: p = 2/3, 1/3
    # every system block after its first use is a hit: (40 - 2 firsts) ... exactly:
    blocks = sum(len(x) for x in t.prefix_hashes)
    hits = sum(2 if p == 52 else 3 for p in t.prompt_tokens.tolist()) - 5  # minus first uses
    assert t.meta["ideal_prefix_reuse"] == pytest.approx(hits / blocks)


def test_determinism_and_seed_namespaces():
    a = shared_system_prompts(ARRIVALS, seed=4)
    b = shared_system_prompts(ARRIVALS, seed=4)
    c = shared_system_prompts(ARRIVALS, seed=5)
    assert list(a.prefix_hashes) == list(b.prefix_hashes)
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not {x[0] for x in a.prefix_hashes} & {x[0] for x in c.prefix_hashes}


def test_few_shot_templates_share_instruction_and_template():
    t = few_shot_templates(ARRIVALS, n_templates=3, instruction_tokens=64, examples=2,
                           example_tokens=40, query_tokens=10, output_tokens=3, seed=0)
    h = list(t.prefix_hashes)
    assert all(x[:4] == h[0][:4] for x in h)  # the instruction: 64 tokens = 4 blocks
    assert t.meta["template_tokens"] == [144, 144, 144]
    assert set(t.prompt_tokens.tolist()) == {154}
    # same template: 144 tokens = 9 full blocks shared; different: only the 4
    pairs = {common(a, b) for i, a in enumerate(h) for b in h[i + 1:]}
    assert pairs == {4, 9}
    assert t.meta["ideal_prefix_reuse"] > 0.8


def test_sessions_grow_and_extend_their_hashes():
    starts = np.array([0.0, 5.0, 100.0])
    t = multi_turn_sessions(starts, turns=3, think_time_s=10.0, user_tokens=10,
                            output_tokens=20, seed=3)
    assert len(t) == 9 and (np.diff(t.arrival_s) >= 0).all()
    for j in range(3):
        rows = np.flatnonzero(t.session_id == f"session-{j}")
        assert t.prompt_tokens[rows].tolist() == [10, 40, 70]  # + previous 20 + new 10
        assert t.arrival_s[rows[0]] == starts[j]
        hs = [t.prefix_hashes[r] for r in rows]
        assert [len(x) for x in hs] == [0, 2, 4]
        assert hs[2][:2] == hs[1]
    assert not set(t.prefix_hashes[1]) & set(t.prefix_hashes[-1])  # sessions share nothing
    same = multi_turn_sessions(starts, turns=3, think_time_s=10.0, user_tokens=10,
                               output_tokens=20, seed=3)
    assert list(same.prefix_hashes) == list(t.prefix_hashes)
    assert np.array_equal(same.arrival_s, t.arrival_s)


def test_sessions_with_system_prompt_and_limit():
    t = multi_turn_sessions(np.zeros(4), turns=Uniform(1, 6), think_time_s=0.0,
                            system_tokens=32, user_tokens=16, output_tokens=Fixed(16),
                            max_prompt_tokens=100, seed=1)
    firsts = [x for x, p in zip(t.prefix_hashes, t.prompt_tokens.tolist(), strict=True)
              if p == 48]
    assert len(firsts) == 4 and len({x[:2] for x in firsts}) == 1  # system: 2 shared blocks
    assert len({x[2] for x in firsts}) == 4  # then each session's own message
    assert t.prompt_tokens.max() <= 100
    assert set(t.prompt_tokens.tolist()) <= {48, 80}
    # the draws: token base, then turns per session; turn 3 would need 112 > 100 tokens
    rng = np.random.Generator(np.random.PCG64(1))
    rng.integers(1 << 40)
    turns = rng.integers(1, 7, 4)
    assert len(t) == t.meta["turns"] == np.minimum(turns, 2).sum()
    assert t.meta["truncated_sessions"] == (turns > 2).sum() > 0
    assert t.meta["dropped_turns"] == np.maximum(turns - 2, 0).sum()
    # zero think time: a session's turns arrive together, still in turn order
    for j in range(4):
        ps = t.prompt_tokens[t.session_id == f"session-{j}"].tolist()
        assert ps == sorted(ps)


def test_ideal_prefix_reuse_counts_leading_seen_blocks():
    blocks, tokens = ideal_prefix_reuse([(1, 2), (1, 2, 3), (4,), (1, 5)], [40, 50, 20, 40], 16)
    assert blocks == pytest.approx(3 / 8)  # (1, 2) in row 1, (1) in row 3
    assert tokens == pytest.approx((32 + 16) / 150)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: shared_system_prompts(ARRIVALS, n_prompts=0), "n_prompts=0"),
    (lambda: shared_system_prompts(ARRIVALS, n_prompts=2, system_tokens=[5]), "1 lengths"),
    (lambda: shared_system_prompts(ARRIVALS, popularity="pareto"), "popularity='pareto'"),
    (lambda: shared_system_prompts(ARRIVALS, user_tokens="x"), "user_tokens='x'"),
    (lambda: shared_system_prompts(ARRIVALS, block_size=0), "block_size=0"),
    (lambda: few_shot_templates(ARRIVALS, examples=-1), "examples=-1"),
    (lambda: multi_turn_sessions(np.zeros(2), think_time_s=-1), "think_time_s=-1"),
    (lambda: multi_turn_sessions(np.zeros(2), max_prompt_tokens=0), "max_prompt_tokens=0"),
])
def test_bad_parameters(call, message):
    with pytest.raises(ValueError, match=message):
        call()
