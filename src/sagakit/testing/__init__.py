"""A kit for testing your own sagas: virtual time, simulated crashes, a crash sweep, and an
effect ledger.

- :func:`crash_sweep`: one line of test that runs your saga once per crash point it
  reaches, crashing and recovering there, and fails naming the point where an effect ran
  twice, a compensation ran twice or for an effect never applied, or the saga did not end
  as it does without a crash.
- :class:`FakeClock`: give ``clock.sleep`` to the orchestrator and retry backoffs cost
  nothing (step timeouts still use the event loop's clock).
- :class:`CrashAt` and :func:`crash_points`: a probe that makes the orchestrator's driver
  die at a named point, as if the process had been killed there.
- :func:`restart` and :func:`wait_through_crashes`: a new process on the same store that
  recovers what the dead one left.
- :class:`EffectLedger`: what your fake participants really did, by idempotency key, with
  assertions that each effect happened once.
- :class:`~sagakit.store.MemoryStore`, re-exported: the store for all of it.
"""

from sagakit.testing.kit import (
    POINTS,
    CrashAt,
    CrashPoint,
    Effect,
    EffectLedger,
    FakeClock,
    MemoryStore,
    SimulatedCrash,
    crash_points,
    restart,
    wait_through_crashes,
)
from sagakit.testing.sweep import SweepReport, crash_sweep

__all__ = [
    "POINTS",
    "CrashAt",
    "CrashPoint",
    "Effect",
    "EffectLedger",
    "FakeClock",
    "MemoryStore",
    "SimulatedCrash",
    "SweepReport",
    "crash_points",
    "crash_sweep",
    "restart",
    "wait_through_crashes",
]
