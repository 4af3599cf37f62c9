"""The simulated GPUs behind one engine: memory in use and busy time, as NVIDIA's DCGM exporter reports them.

Memory in use on each of the replica's ``tp`` GPUs = its share of the weights + activations and runtime overhead
(the performance model's figures) + the KV blocks requests hold now + a leak (fault ``memory_leak_mib_per_min``),
capped at the GPU's memory. Real vLLM preallocates its whole KV pool, so a real DCGM ``FB_USED`` sits near
``gpu_memory_utilization`` whatever the load; the simulation counts only blocks in use so the panels move with load.

Busy time is the union of scheduler steps over a sliding window (DCGM's ``GPU_UTIL`` is the fraction of a sample
period during which a kernel ran). All times are the engine clock's (simulated) seconds, passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from llmfleet.perfmodel.model import GIB, PerfModel

MIB = 2**20


@dataclass(frozen=True)
class GpuSample:
    """One GPU's figures at one instant, in DCGM's units."""

    used_mib: float
    free_mib: float
    util_pct: float


class SimGpus:
    """Memory and utilisation of the ``tp`` identical GPUs of one simulated replica."""

    def __init__(self, perf: PerfModel, block_size: int, now_s: float, busy_window_s: float = 10.0) -> None:
        if busy_window_s <= 0:
            raise ValueError("busy_window_s must be > 0")
        self.count = perf.tp
        self.name = perf.gpu.name
        self.total_bytes = perf.gpu.memory_bytes
        self.static_bytes = perf.weight_bytes_per_gpu + (perf.eff.activation_gib + perf.eff.runtime_overhead_gib) * GIB
        self.block_bytes = block_size * perf.kv_bytes_per_token / perf.tp
        self.busy_window_s = busy_window_s
        self._busy: deque[tuple[float, float]] = deque()
        self._leak_mib_per_min = 0.0
        self._leak_since_s = now_s

    # ---- memory ---------------------------------------------------------------------------------------------------
    def set_leak(self, mib_per_min: float, now_s: float) -> None:
        """Start (or change) a leak at ``now_s``; the same rate again keeps the leak growing, 0 frees it."""
        if mib_per_min != self._leak_mib_per_min:
            self._leak_mib_per_min = mib_per_min
            self._leak_since_s = now_s

    def leaked_bytes(self, now_s: float) -> float:
        return self._leak_mib_per_min * MIB * max(0.0, now_s - self._leak_since_s) / 60.0

    def used_bytes(self, kv_blocks_in_use: int, now_s: float) -> float:
        """Bytes in use on each GPU."""
        used = self.static_bytes + kv_blocks_in_use * self.block_bytes + self.leaked_bytes(now_s)
        return min(used, self.total_bytes)

    # ---- busy time ------------------------------------------------------------------------------------------------
    def record_busy(self, start_s: float, end_s: float) -> None:
        """A scheduler step ran on the GPUs from ``start_s`` to ``end_s``."""
        if end_s <= start_s:
            return
        if self._busy and start_s <= self._busy[-1][1]:  # back-to-back steps merge
            last_start, last_end = self._busy.pop()
            self._busy.append((last_start, max(last_end, end_s)))
        else:
            self._busy.append((start_s, end_s))

    def utilization(self, now_s: float) -> float:
        """Fraction (0..1) of the last ``busy_window_s`` during which a step ran."""
        since = now_s - self.busy_window_s
        while self._busy and self._busy[0][1] <= since:
            self._busy.popleft()
        busy = sum(max(0.0, min(end, now_s) - max(start, since)) for start, end in self._busy)
        return min(1.0, busy / self.busy_window_s)

    # ---- export ---------------------------------------------------------------------------------------------------
    def sample(self, kv_blocks_in_use: int, now_s: float) -> GpuSample:
        """Each GPU's figures now (the ``tp`` GPUs of a replica are symmetric)."""
        used = self.used_bytes(kv_blocks_in_use, now_s)
        return GpuSample(used / MIB, (self.total_bytes - used) / MIB, 100.0 * self.utilization(now_s))
