from __future__ import annotations

from llmfleet.engines.sim.kvcache import KVCacheManager
from llmfleet.engines.sim.scheduler import FinishReason, Scheduler, SimRequest


def _req(i: int, prompt_len: int, max_tokens: int = 8) -> SimRequest:
    return SimRequest(str(i), list(range(i * 1000, i * 1000 + prompt_len)), max_tokens, arrival_s=0.0)


def _run_step(s: Scheduler) -> list[SimRequest]:
    plan = s.schedule(0.0)
    emitting = s.complete(plan)
    for r in emitting:
        r.output_ids.append(7)
    return emitting


def test_max_num_seqs_limits_running() -> None:
    s = Scheduler(KVCacheManager(1000, 16, False), max_num_seqs=4, max_num_batched_tokens=8192)
    for i in range(10):
        s.add(_req(i, 10))
    s.schedule(0.0)
    assert len(s.running) == 4 and len(s.waiting) == 6


def test_chunked_prefill_respects_token_budget() -> None:
    s = Scheduler(KVCacheManager(1000, 16, False), max_num_seqs=8, max_num_batched_tokens=512)
    s.add(_req(0, 1300))
    steps = 0
    while not _run_step(s):
        steps += 1
    assert steps == 2  # 512 + 512 + 276: the first token comes out of the third step
    plan = s.schedule(0.0)
    assert [n for _, n in plan.scheduled] == [1]  # then decode, one token per step


def test_decodes_come_before_new_prefills() -> None:
    s = Scheduler(KVCacheManager(1000, 16, False), max_num_seqs=8, max_num_batched_tokens=100)
    s.add(_req(0, 50))
    _run_step(s)
    s.add(_req(1, 500))
    plan = s.schedule(0.0)
    assert [(r.request_id, n) for r, n in plan.scheduled] == [("0", 1), ("1", 99)]


def test_kv_exhaustion_preempts_latest_and_everything_finishes() -> None:
    kv = KVCacheManager(num_blocks=10, block_size=4, enable_prefix_caching=False)
    s = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=1000)
    reqs = [_req(i, 12, max_tokens=10) for i in range(3)]  # 3 x 22 tokens > 40 token capacity
    for r in reqs:
        s.add(r)
    preemptions = 0
    for _ in range(200):
        if not s.has_work():
            break
        plan = s.schedule(0.0)
        preemptions += len(plan.preempted)
        for r in s.complete(plan):
            r.output_ids.append(1)
            if len(r.output_ids) >= r.max_tokens:
                s.finish(r, FinishReason.LENGTH)
        assert kv.usage <= 1.0
    assert not s.has_work()
    assert preemptions > 0
    assert all(len(r.output_ids) == 10 for r in reqs)
