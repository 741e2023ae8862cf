"""Restart policy and backoff: what to do when a replica's process ends. Pure: times are passed in.

Policies (compose `restart:` and `deploy.restart_policy`, folded into `RestartPolicy` by the loader):

- `no`: never restart; `always`: always; `unless-stopped`: always (pysup has no daemon to survive,
  so it is `always` until the user stops it); `on-failure[:N]`: when the exit was a failure (exit
  code != 0, a signal, an OOM kill, unhealthy), at most N restarts in all (N counts total policy
  restarts, as the Docker engine does; with `window`, only restarts within the last `window`
  seconds count, as swarmkit does).
- A stop the user asked for never restarts.
- An `unhealthy` replica (pysup stops it when `x-pysup.restart_on_unhealthy`) is a failure.

Delay (specs/x-pysup.md, backoff): `base` after the first failure, doubling after each consecutive
failure up to `cap`; a run of `reset_after` or longer resets the sequence. `deploy.restart_policy.delay`
replaces `base`.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

import attrs

from ..config.model import Backoff, RestartPolicy
from ..config.units import UnitError, signal_name as _name

ExitKind = Literal["exit", "signal", "oom", "unhealthy", "start-failed"]


def signal_name(sig: int) -> str:
    """How pysup prints a signal: `config.units.signal_name` ("SIGTERM", "SIGRTMIN+3"), or
    "signal 32" for a number without a name."""
    try:
        return _name(sig)
    except UnitError:
        return f"signal {sig}"


@attrs.frozen
class ExitReason:
    """Why a replica's process ended."""

    kind: ExitKind
    code: int | None = None  # exit code, when it exited
    signal: int | None = None  # the signal that killed it
    detail: str = ""  # start failure message, last health probe output, OOM victim

    @classmethod
    def from_status(cls, code: int | None, signal: int | None, *, oom: bool = False, unhealthy: bool = False,
                    detail: str = "") -> ExitReason:
        kind: ExitKind = "oom" if oom else "unhealthy" if unhealthy else "signal" if signal else "exit"
        return cls(kind, code, signal, detail)

    @property
    def exit_code(self) -> int:
        """Docker's convention: the code, or 128 + the signal number (137 for an OOM kill)."""
        if self.code is not None:
            return self.code
        if self.signal is not None:
            return 128 + self.signal
        return 137 if self.kind == "oom" else 1

    @property
    def failed(self) -> bool:
        return not (self.kind == "exit" and self.code == 0)

    def describe(self) -> str:
        if self.kind == "oom":
            return "OOM killed" + (f" ({self.detail})" if self.detail else "")
        if self.kind == "unhealthy":
            return "unhealthy" + (f": {self.detail}" if self.detail else "")
        if self.kind == "start-failed":
            return f"start failed: {self.detail}"
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        return f"exit code {self.code}"


@attrs.frozen
class Decision:
    """Restart after `delay` seconds (at `at` on the caller's clock), or give up; `why` says which."""

    restart: bool
    why: str
    delay: float = 0.0
    at: float | None = None
    attempt: int = 0  # the restart this would be (1 for the first)


@attrs.define
class RestartTracker:
    """One replica's restart history: feed it each end with `decide`."""

    policy: RestartPolicy
    backoff: Backoff = attrs.field(factory=Backoff)
    restart_on_unhealthy: bool = True
    restarts: int = 0  # policy restarts so far
    consecutive: int = 0  # failures since the last long-enough run (drives the delay)
    _recent: deque = attrs.field(factory=deque)  # times of restarts, for `window`

    def delay_for(self, n: int) -> float:
        """The delay before the restart after the n-th consecutive failure (n >= 1)."""
        base = self.policy.delay if self.policy.delay is not None else self.backoff.base
        if base <= 0:
            return 0.0
        return min(self.backoff.cap, base * 2 ** min(n - 1, 62))

    def decide(self, reason: ExitReason, *, ran_for: float, now: float, stop_requested: bool = False) -> Decision:
        cond = self.policy.condition
        if stop_requested:
            return Decision(False, "stop requested")
        if reason.kind == "unhealthy" and not self.restart_on_unhealthy:
            return Decision(False, "unhealthy, and x-pysup.restart_on_unhealthy is false")
        if cond == "no":
            return Decision(False, "restart policy is no")
        if cond == "on-failure" and not reason.failed:
            return Decision(False, "exited with code 0 (restart: on-failure)")
        limit = self.policy.max_attempts
        if cond == "on-failure" and limit:  # 0 or None: unlimited
            if self.policy.window:
                while self._recent and now - self._recent[0] >= self.policy.window:
                    self._recent.popleft()
                counted = len(self._recent)
            else:
                counted = self.restarts
            if counted >= limit:
                within = f" within {self.policy.window:g} s" if self.policy.window else ""
                return Decision(False, f"gave up after {counted} restarts{within} (on-failure:{limit})")
        if ran_for >= self.backoff.reset_after:
            self.consecutive = 0
        self.consecutive += 1
        self.restarts += 1
        self._recent.append(now)
        delay = self.delay_for(self.consecutive)
        return Decision(True, reason.describe(), delay, now + delay, self.restarts)
