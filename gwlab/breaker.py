"""Circuit breaker with exponential backoff, one per provider.

States, with the seed's names and the standard ones::

    HEALTHY   (CLOSED)     no recent failures; calls go through
    FAILING   (CLOSED)     1 .. threshold-1 consecutive failures; calls still go through,
                           a success returns to HEALTHY
    OPEN      (OPEN)       threshold reached: no calls until the cooldown has passed
    HALF_OPEN (HALF_OPEN)  cooldown over: up to ``half_open_max_calls`` probes at once;
                           a successful probe -> HEALTHY, a failed one -> OPEN again

The n-th opening since the last recovery cools down for
``min(base_delay * 2**(n-1), max_cooldown)`` seconds: 1, 2, 4, 8, 16, 30, 30 ... with the
defaults. OPEN becomes HALF_OPEN by the passage of time alone, computed from ``now`` when
asked; there are no timers.

Asking and reserving are separate. :meth:`available` is a pure query, used to find the
eligible providers; :meth:`acquire` is called only for the provider actually chosen and
returns a :class:`Permit` stamped with the breaker's *generation*, which changes every time
the breaker opens or recovers. :meth:`record` ignores, for state changes, any outcome whose
permit is from an older generation: at 1000 requests/s hundreds of calls are in flight when
a breaker opens, and their late failures must not lengthen its cooldown, nor a late success
close it.

State changes are announced to listeners (``Transition`` objects); the breaker itself never
logs or prints.
"""

from __future__ import annotations

import enum
from typing import Callable, NamedTuple

from gwlab.config import BreakerConfig


class State(enum.Enum):
    HEALTHY = "healthy"
    FAILING = "failing"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def standard(self) -> str:
        """The textbook name: HEALTHY and FAILING are both CLOSED."""
        return "CLOSED" if self in CLOSED else self.name


CLOSED = (State.HEALTHY, State.FAILING)
"""The states whose standard name is CLOSED. A tuple, not a set: hashing an enum member is a
Python-level call, and the router and the simulator ask this of every transition."""

AVAILABILITY = (State.HEALTHY, State.FAILING, State.HALF_OPEN, State.OPEN)
"""The states from the most available to the least: a FAILING breaker still admits every
call, a HALF_OPEN one only its probes, an OPEN one none. Timelines draw them in this order, and
a snapshot merged over replicas shows a provider in the least available state of any."""

_HEALTHY, _FAILING, _OPEN, _HALF_OPEN = State.HEALTHY, State.FAILING, State.OPEN, State.HALF_OPEN
"""The states under module names: the breaker compares them on every request, and a module
global is read more cheaply than a member looked up on its Enum class."""


class Permit:
    """Leave to make one call, stamped with the breaker's generation.

    A *probe* permit decides a HALF_OPEN (or forced) trial and holds one of the breaker's
    probe slots until it is recorded or released, exactly once: a second time raises
    :class:`PermitError`. Ordinary permits hold no slot and decide nothing alone, so a closed
    breaker hands the same one to every call of a generation (the router guards their
    routes against being completed twice)."""

    __slots__ = ("generation", "probe", "out")

    def __init__(self, generation: int, probe: bool) -> None:
        self.generation = generation
        self.probe = probe
        self.out = probe
        """A probe not yet recorded or released."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Permit) and (self.generation, self.probe) == (other.generation, other.probe)

    def __hash__(self) -> int:
        return hash((self.generation, self.probe))

    def __repr__(self) -> str:
        return f"Permit(generation={self.generation}, probe={self.probe})"


UNCOUNTED = Permit(-1, probe=False)
"""The permit of a call whose outcome no breaker hears: of a generation no breaker has, so
:meth:`CircuitBreaker.record` changes nothing. The router's ``panic`` fallback calls
providers whose breakers are open under it (DESIGN: "breakers recover by their own probes")."""


class PermitError(RuntimeError):
    """A probe permit was recorded or released a second time: the caller miscounts calls."""


class Transition(NamedTuple):
    """A state change: at ``at`` seconds, ``provider`` went from ``source`` to ``target``.
    ``cooldown`` is the new cooldown when ``target`` is OPEN, else 0. A named tuple, made
    without a Python-level ``__init__``: under load a breaker flips between HEALTHY and
    FAILING many times a second, and each flip is announced."""

    at: float
    provider: str
    source: State
    target: State
    cooldown: float


Listener = Callable[[Transition], None]


def cooldown_for(trips: int, config: BreakerConfig) -> float:
    """Cooldown of the ``trips``-th opening since the last recovery (``trips`` >= 1)."""
    # Compare exponents rather than computing 2**(trips-1), which overflows a float after
    # a thousand trips of a provider that never recovers.
    if trips - 1 >= 1024 or config.base_delay * 2.0 ** (trips - 1) >= config.max_cooldown:
        return config.max_cooldown
    return config.base_delay * 2.0 ** (trips - 1)


class CircuitBreaker:
    """The breaker of one provider. Every method that depends on time takes ``now``."""

    def __init__(self, name: str, config: BreakerConfig, listeners: list[Listener] | None = None) -> None:
        self.name = name
        self.config = config
        self.listeners: list[Listener] = listeners if listeners is not None else []
        self.generation = 0
        self.failures = 0
        """Consecutive failures in the current closed period."""
        self.trips = 0
        """Openings since the last recovery; sets the next cooldown."""
        self.opened_at = 0.0
        self.cooldown = 0.0
        self.probes = 0
        """Probe permits of the current generation still out."""
        self._state = _HEALTHY
        self.healthy = True
        """Whether the state is HEALTHY: a success under :attr:`permit` then changes nothing
        (:meth:`record`'s first case), so the router, which completes every call, skips
        :meth:`record` for it."""
        self.closed = True
        """Whether every call goes through without asking more: the breaker is CLOSED
        (HEALTHY or FAILING) or switched off. Kept with each change of state or
        configuration, so the router, which asks every breaker while one is not CLOSED, reads
        an attribute instead of calling :meth:`available` for those."""
        self.permit = Permit(self.generation, False)
        """The permit of every ordinary (non-probe) call in this generation: one immutable
        object, handed out again rather than made per request (what :meth:`acquire` gives
        while the breaker is :attr:`closed`; the router reads it itself then)."""

    # -- queries (pure) -------------------------------------------------------------

    def state(self, now: float) -> State:
        """The state at ``now``: OPEN reads as HALF_OPEN once its cooldown has passed."""
        if self._state is _OPEN and now >= self.reopens_at:
            return _HALF_OPEN
        return self._state

    @property
    def reopens_at(self) -> float:
        """When the current (or last) cooldown ends."""
        return self.opened_at + self.cooldown

    def cooldown_left(self, now: float) -> float:
        """Seconds of cooldown still to run (0 unless OPEN)."""
        return max(0.0, self.reopens_at - now) if self._state is _OPEN else 0.0

    def available(self, now: float) -> bool:
        """Would a call be let through at ``now``? (Reserves nothing.) The router asks each
        provider only while some breaker is OPEN or HALF_OPEN; a closed one answers at once."""
        if self.closed:
            return True
        if self._state is _OPEN and now < self.reopens_at:
            return False
        return self.probes < self.config.half_open_max_calls

    # -- changes --------------------------------------------------------------------

    def settle(self, now: float) -> None:
        """Carry out the OPEN -> HALF_OPEN change that time alone brings, announcing it at
        the moment the cooldown ended (which may be before ``now``)."""
        if self._state is _OPEN and now >= self.reopens_at:
            self._move(_HALF_OPEN, self.reopens_at)

    def acquire(self, now: float, force: bool = False) -> Permit:
        """Reserve a call to this provider. Call only after :meth:`available` said yes, or
        with ``force=True`` for the router's fallback, which may call an OPEN provider (or a
        HALF_OPEN one whose slots are taken): such a call is a probe, deciding the breaker
        like a HALF_OPEN one. Raises :class:`PermitError` for a call :meth:`available`
        would not let through, unless forced."""
        if self.closed:  # no probe
            return self.permit
        self.settle(now)
        if not force and not self.available(now):
            raise PermitError(f"breaker {self.name}: acquire() at {now!r} without a free slot; "
                              "ask available() first, or force the fallback's probe")
        self.probes += 1
        return Permit(self.generation, probe=True)

    def record(self, permit: Permit, now: float, ok: bool) -> bool:
        """Take the outcome of a call made under ``permit``. Returns ``False`` when the
        outcome changed nothing: the permit is from an older generation (stale), or the
        breaker is switched off. A probe's slot comes back either way; recording a probe
        permit twice raises :class:`PermitError`."""
        if ok and permit is self.permit and self._state is _HEALTHY:
            # Most calls: an ordinary permit of this generation succeeds on a healthy breaker,
            # which changes nothing; answered before the checks the other cases need.
            return self.config.enabled
        if self._state is _OPEN:  # only an OPEN breaker has anything to settle: asked first, as this runs per call
            self.settle(now)
        if permit.probe:
            self._give_back(permit)
        if permit.generation != self.generation or not self.config.enabled:
            return False
        if permit.probe:
            if ok:
                self.trips = 0
                self.failures = 0
                self._new_generation(_HEALTHY, now)
            else:
                self._open(now)
        elif self._state not in CLOSED:
            # Only a permit taken while the breaker was switched off gets here.
            return False
        elif ok:
            if self._state is _FAILING:
                self.failures = 0
                self._move(_HEALTHY, now)
        else:
            self.failures += 1
            if self.failures >= self.config.failure_threshold:
                self._open(now)
            elif self._state is _HEALTHY:
                self._move(_FAILING, now)
        return True

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call never finished: its probe slot frees up, and
        nothing is learned about the provider. Releasing a probe permit twice (or after
        recording it) raises :class:`PermitError`."""
        if permit.probe:
            self._give_back(permit)

    def _give_back(self, permit: Permit) -> None:
        """A probe permit comes back: its slot is free again if it is of this generation (a
        new generation started with every slot free)."""
        if not permit.out:
            raise PermitError(f"breaker {self.name}: a probe permit was recorded or released twice")
        permit.out = False
        if permit.generation == self.generation:
            self.probes -= 1

    def configure(self, config: BreakerConfig) -> None:
        """New parameters, used from the next transition on: a running cooldown keeps the
        length it was given."""
        self.config = config
        self.closed = self._state is _HEALTHY or self._state is _FAILING or not config.enabled

    def reset(self, now: float) -> None:
        """Back to HEALTHY with no history (outstanding permits become stale)."""
        self.failures = self.trips = 0
        self._new_generation(_HEALTHY, now)

    def _open(self, now: float) -> None:
        self.trips += 1
        self.failures = 0
        self.opened_at = now
        self.cooldown = cooldown_for(self.trips, self.config)
        self._new_generation(_OPEN, now)

    def _new_generation(self, target: State, now: float) -> None:
        self.generation += 1
        self.permit = Permit(self.generation, False)
        self.probes = 0
        self._move(target, now)

    def _move(self, target: State, at: float) -> None:
        source, self._state = self._state, target
        self.healthy = target is _HEALTHY
        self.closed = target is _HEALTHY or target is _FAILING or not self.config.enabled
        # OPEN -> OPEN is a new opening (a failed forced probe) with a longer cooldown: announce it.
        if source is target and target is not _OPEN:
            return
        event = Transition(at, self.name, source, target, self.cooldown if target is _OPEN else 0.0)
        for listener in self.listeners:
            listener(event)
