"""The rules engine: signals in, explained alerts out. Pure: no I/O, time passed in.

One :class:`Engine` holds many sessions. For each signal it runs only the rules indexed
under the signal's name, checks consent (scopes in force *at the signal's own time*),
evaluates the ``when`` condition and exceptions, advances the rule's correlation state
(grouped by participant or session), and turns what fires into an :class:`Alert` after
recording-policy capping, de-duplication (fingerprint + cooldown), caps and inhibition.

Windows and holds use event time (``signal.at``); ``tick(now)`` fires holds and absences
whose time has come; a session's pending holds are also checked at each of its signals.
"""

from __future__ import annotations

import functools
import hashlib
from collections import deque
from collections.abc import Iterable
from typing import Any

from rules.durations import format_duration
from rules.model import Alert, Outcome, Severity, Skip
from rules.predicates import make_context
from rules.ruleset import CompiledRule, Ruleset
from rules.templates import render
from signals.catalog import CATALOGUE
from signals.consent import FULL_MONITORING, NO_CONSENT, Consent
from signals.devices import DeviceClassifier, default_classifier, derive_virtual_devices
from signals.model import Signal

__all__ = ["Engine"]

_AGREED = ("patient_allowed", "provider_records")
_NEVER = 2**62
_NO_CONTEXT: dict[str, Any] = {}
_MAX_CONSENT_HISTORY = 8
_SINCE_EVER = -(2**62)  # the time of a session's first consent record


class _Group:
    """Correlation state of one rule for one participant (or the whole session)."""

    __slots__ = ("events", "fired", "start")

    def __init__(self) -> None:
        self.start: int | None = None          # hold/absent: when the state began / deadline
        self.fired = False
        self.events: Any = None                # count: deque; distinct: dict; steps: list


class _Session:
    __slots__ = ("cap_skip", "capped", "consented", "consents", "counts", "groups",
                 "inhibitions", "last_fired", "next_due", "skipped", "timed", "total")

    def __init__(self, consent: Consent) -> None:
        self.consents: list[tuple[int, Consent]] = [(_SINCE_EVER, consent)]
        self.consented = False  # set_consent was called (the default no longer applies)
        self.groups: dict[tuple[int, str], _Group] = {}
        # fingerprint -> (time, severity) of the last alert raised with it
        self.last_fired: dict[tuple[Any, ...], tuple[int, Severity]] = {}
        self.next_due = _NEVER
        self.counts: dict[int, int] = {}
        # (until, participant, tags, severity raised, the rule's own severity)
        self.inhibitions: deque[tuple[int, str, frozenset[str], Severity, Severity]] | None = None
        self.skipped: set[int] | None = None
        self.timed: set[tuple[int, str]] | None = None
        self.total = 0
        self.capped = False  # the session limit held an alert back (reported once)
        self.cap_skip: Skip | None = None  # ... its report, until feed/tick hands it out

    def consent_at(self, at: int) -> Consent:
        c = self.consents
        if len(c) == 1 or at >= c[-1][0]:
            return c[-1][1]
        for t, consent in reversed(c):
            if t <= at:
                return consent
        return c[0][1]


def _trim_consents(consents: list[tuple[int, Consent]]) -> None:
    """Fold the two oldest consent records into one, from the oldest one's time, granting
    only the scopes both granted (the newer one's recording policy). A signal stamped that
    long ago is then never analysed beyond what was granted at its time: the fold can only
    withhold, never grant (privacy first; such a late signal is rare)."""
    (t0, old), (_, newer) = consents[0], consents[1]
    consents[1] = (t0, Consent(old.monitoring & newer.monitoring, newer.recording))
    del consents[0]


class Engine:
    """Runs a :class:`Ruleset` over the signals of many sessions.

    ``default_consent`` applies to a session until ``set_consent`` is called for it (the
    most private default: nothing analysed). ``max_alerts_per_session`` caps every session.
    """

    def __init__(self, ruleset: Ruleset, *, default_consent: Consent = NO_CONSENT,
                 classifier: DeviceClassifier | None = None,
                 max_alerts_per_session: int = 200) -> None:
        self.ruleset = ruleset
        self.default_consent = default_consent
        self.classifier = classifier or default_classifier()
        self.max_alerts_per_session = max_alerts_per_session
        self._sessions: dict[str, _Session] = {}
        self._timed: set[str] = set()

    # -- sessions and consent ---------------------------------------------------------
    def _session(self, sid: str) -> _Session:
        s = self._sessions.get(sid)
        if s is None:
            s = self._sessions[sid] = _Session(self.default_consent)
        return s

    def set_consent(self, session: str, consent: Consent, now: int) -> None:
        """The consent in force for ``session`` from time ``now`` on (earlier signals keep
        the consent of their own time). Skips are reported afresh after a change."""
        s = self._session(session)
        first, s.consented = not s.consented, True
        s.skipped = None
        self._forget_withheld(s, consent)
        if first and not s.consents[0][1].monitoring:
            # the session's first consent after a default that grants nothing: it holds from
            # the start. A patient's clock a little behind the sidecar's stamps the first
            # signals before ``now``; they must not fall under "nothing granted" (skipped).
            # (The server checks each signal's scope on arrival, so nothing sent before the
            # consent is analysed.) Only the first: a later grant after an explicit "nothing"
            # applies from its own time.
            s.consents[0] = (_SINCE_EVER, consent)
            return
        s.consents.append((now, consent))
        s.consents.sort(key=lambda tc: tc[0])
        if len(s.consents) > _MAX_CONSENT_HISTORY:
            _trim_consents(s.consents)

    def _forget_withheld(self, s: _Session, consent: Consent) -> None:
        """Drop what rules whose scopes ``consent`` withholds had gathered (a pending hold,
        a half-complete sequence): the signals that would have ended or changed it are no
        longer seen, so it would fire on a picture that is no longer true."""
        rules = self.ruleset.rules
        granted = consent.monitoring
        for gkey in [k for k in s.groups if not rules[k[0]].requires <= granted]:
            del s.groups[gkey]
            if s.timed:
                s.timed.discard(gkey)

    def consent(self, session: str, at: int) -> Consent:
        s = self._sessions.get(session)
        return s.consent_at(at) if s else self.default_consent

    def end_session(self, session: str) -> None:
        """Forget everything about ``session`` (pending holds do not fire)."""
        self._sessions.pop(session, None)
        self._timed.discard(session)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    # -- feeding ----------------------------------------------------------------------
    def feed(self, signal: Signal, now: int) -> Outcome:
        """Run the rules for one validated signal. ``client.devices`` also derives
        ``client.virtual_device`` signals (when device monitoring is granted), which are
        run too and returned in ``Outcome.derived``.

        Windows, holds and consent are evaluated at the signal's own time ``signal.at`` (so
        replay and live agree); ``now`` is the caller's clock, kept for the seam."""
        s = self._sessions.get(signal.session) or self._session(signal.session)
        alerts: list[Alert] = []
        skipped: list[Skip] = []
        suppressed = [0]
        if s.timed and signal.at >= s.next_due:
            self._check_timers(signal.session, s, signal.at, alerts, suppressed)
        derived: list[Signal] = []
        consent = s.consent_at(signal.at)
        if signal.name == "client.devices" and consent.allows("device"):
            derived = derive_virtual_devices(signal, self.classifier)
        fired: list[tuple[CompiledRule, tuple[Signal, ...]]] = []
        for sig in (signal, *derived):
            self._run(sig, s, consent, fired, skipped)
        if len(fired) > 1:  # the most severe first, so inhibition mutes its companions
            fired.sort(key=lambda rf: -rf[0].severity)
        for rule, evidence in fired:
            self._emit(rule, evidence, signal.at, s, alerts, suppressed)
        if s.cap_skip is not None:
            skipped.append(s.cap_skip)
            s.cap_skip = None
        if not (alerts or derived or skipped or suppressed[0]):
            return _EMPTY
        return Outcome(tuple(alerts), tuple(derived), tuple(skipped), suppressed[0])

    def feed_many(self, signals: Iterable[Signal], now: int) -> Outcome:
        alerts: list[Alert] = []
        derived: list[Signal] = []
        skipped: list[Skip] = []
        n = 0
        for sig in signals:
            o = self.feed(sig, now)
            alerts += o.alerts
            derived += o.derived
            skipped += o.skipped
            n += o.suppressed
        return Outcome(tuple(alerts), tuple(derived), tuple(skipped), n)

    def tick(self, now: int) -> Outcome:
        """Fire the holds and absences whose time has come (call about once a second)."""
        alerts: list[Alert] = []
        skipped: list[Skip] = []
        suppressed = [0]
        for sid in sorted(self._timed):
            s = self._sessions.get(sid)
            if s is None or not s.timed:
                self._timed.discard(sid)
                continue
            if now < s.next_due:
                continue
            self._check_timers(sid, s, now, alerts, suppressed)
            if s.cap_skip is not None:
                skipped.append(s.cap_skip)
                s.cap_skip = None
        if not alerts and not skipped and not suppressed[0]:
            return _EMPTY
        return Outcome(tuple(alerts), (), tuple(skipped), suppressed[0])

    # -- internals --------------------------------------------------------------------
    def _run(self, sig: Signal, s: _Session, consent: Consent,
             fired_now: list[tuple[CompiledRule, tuple[Signal, ...]]],
             skipped: list[Skip]) -> None:
        """Append to ``fired_now`` each rule ``sig`` makes fire, with its evidence."""
        rules = self.ruleset.by_signal.get(sig.name)
        if not rules:
            return
        needs_context = self.ruleset.needs_context
        granted = consent.monitoring
        ctx: dict[str, Any] = _NO_CONTEXT
        key: Any = None
        for rule in rules:
            if not rule.requires <= granted:
                if s.skipped is None:
                    s.skipped = set()
                if rule.index not in s.skipped:
                    s.skipped.add(rule.index)
                    missing = tuple(sorted(rule.requires - granted))
                    skipped.append(Skip(rule.id, sig.session, sig.participant, sig.name,
                                        sig.at, missing))
                continue
            if ctx is _NO_CONTEXT and rule.index in needs_context:
                ctx, key = make_context(sig.name, sig.source, sig.confidence, consent.recording,
                                        sig.data)
            if rule.kind == "match":  # the common case, inline
                if (rule.when is None and not rule.exceptions) or self._matches(rule, ctx, key):
                    fired_now.append((rule, (sig,)))
                continue
            fired = self._step(rule, sig, s, ctx, key)
            if fired is not None:
                fired_now.append((rule, fired))

    def _matches(self, rule: CompiledRule, ctx: dict[str, Any], key: Any) -> bool:
        if rule.when is not None and not rule.when(ctx, key):
            return False
        return not (rule.exceptions and any(p(ctx, key) for _name, p in rule.exceptions))

    def _step(self, rule: CompiledRule, sig: Signal, s: _Session, ctx: dict[str, Any],
              key: Any) -> tuple[Signal, ...] | None:
        kind = rule.kind
        if kind == "match":
            return (sig,) if self._matches(rule, ctx, key) else None
        gkey = (rule.index, sig.participant if rule.group_by == "participant" else "")
        g = s.groups.get(gkey)
        if kind in ("sequence", "all_of"):
            # the rule's own ``when`` and exceptions apply to every signal, then each step's
            if not self._matches(rule, ctx, key):
                return None
            hits = [k for k, st in enumerate(rule.steps)
                    if st.signal == sig.name and (st.when is None or st.when(ctx, key))]
            if not hits:
                return None
            if g is None:
                g = s.groups[gkey] = _Group()
                g.events = [None] * len(rule.steps)
            return self._steps(rule, g, sig, hits)
        matched = self._matches(rule, ctx, key)
        if kind == "hold":
            if not matched:
                if g is not None:
                    del s.groups[gkey]
                    if s.timed:
                        s.timed.discard(gkey)
                return None
            if g is None:
                g = s.groups[gkey] = _Group()
                g.start = sig.at
                g.events = (sig,)
                self._arm(sig.session, s, gkey, sig.at + rule.hold_ms)
            return None
        if not matched:
            return None
        if kind == "absent":
            if g is None:
                g = s.groups[gkey] = _Group()
            g.start, g.events, g.fired = sig.at + rule.hold_ms, (sig,), False
            self._arm(sig.session, s, gkey, g.start)
            return None
        if kind == "count":
            if g is None:
                g = s.groups[gkey] = _Group()
                g.events = deque(maxlen=rule.n)
            ev: deque[Signal] = g.events
            if ev and sig.at < ev[-1].at:
                # stamped before one already counted (another device's clock, a late
                # resend): the window stays in time order, its newest signal its right end
                ev = g.events = deque(sorted([*ev, sig], key=_at)[-rule.n:], maxlen=rule.n)
            else:
                ev.append(sig)
            lo = ev[-1].at - rule.window_ms
            while ev and ev[0].at < lo:
                ev.popleft()
            if len(ev) >= rule.n:
                del s.groups[gkey]
                return tuple(ev)
            return None
        # distinct
        field = rule.field or ""
        if field == "participant":
            value = sig.participant
        elif ctx.get(field) is None:  # a signal without the field adds no value
            return None
        else:
            value = str(ctx[field])
        if g is None:
            g = s.groups[gkey] = _Group()
            g.events = {}
        seen: dict[str, Signal] = g.events
        if value in seen and seen[value].at > sig.at:
            sig = seen[value]  # the later sighting of this value stays
        seen.pop(value, None)
        seen[value] = sig
        lo = max(e.at for e in seen.values()) - rule.window_ms
        for v in [v for v, e in seen.items() if e.at < lo]:
            del seen[v]
        if len(seen) >= rule.n:
            del s.groups[gkey]
            return tuple(sorted(seen.values(), key=_at))
        return None

    def _steps(self, rule: CompiledRule, g: _Group, sig: Signal,
               hits: list[int]) -> tuple[Signal, ...] | None:
        lo = sig.at - rule.window_ms
        ev: list[Any] = g.events
        last = len(rule.steps) - 1
        if rule.kind == "sequence":
            # ev[k] = (start_at, chain) of the latest chain that completed steps 0..k; a
            # step extends a chain only if it comes after the chain's last step ("in order"
            # by the signals' own times, whatever order they arrive in)
            for k in reversed(hits):
                if k == 0:
                    if ev[0] is None or ev[0][0] <= sig.at:
                        ev[0] = (sig.at, (sig,))
                    continue
                prev = ev[k - 1]
                if prev is None or prev[0] < lo or prev[1][-1].at > sig.at:
                    continue
                ev[k] = (prev[0], (*prev[1], sig))
                if k == last:
                    chain: tuple[Signal, ...] = ev[k][1]
                    g.events = [None] * len(rule.steps)
                    return chain
            return None
        # all_of: the window ends at the newest signal held (times may arrive out of order)
        lo = max([sig.at, *(e.at for e in ev if e is not None)]) - rule.window_ms
        for k, e in enumerate(ev):
            if e is not None and e.at < lo:
                ev[k] = None
        if sig.at >= lo:
            # a signal fills one step (two steps it matches need two signals): an empty one,
            # or else the one holding the oldest signal
            free = [k for k in hits if ev[k] is None]
            k = free[0] if free else min(hits, key=lambda k: ev[k].at)
            if ev[k] is None or ev[k].at < sig.at:
                ev[k] = sig
        if all(e is not None for e in ev):
            g.events = [None] * len(rule.steps)
            return tuple(sorted(ev, key=_at))
        return None

    def _arm(self, sid: str, s: _Session, gkey: tuple[int, str], due: int) -> None:
        if s.timed is None:
            s.timed = set()
        s.timed.add(gkey)
        if due < s.next_due:
            s.next_due = due
        self._timed.add(sid)

    def _check_timers(self, sid: str, s: _Session, t: int, alerts: list[Alert],
                      suppressed: list[int]) -> None:
        assert s.timed is not None
        rules = self.ruleset.rules
        due_now: list[tuple[int, int, CompiledRule, tuple[Signal, ...]]] = []
        next_due = _NEVER
        for gkey in sorted(s.timed):
            rule = rules[gkey[0]]
            g = s.groups.get(gkey)
            if g is None or g.start is None:
                s.timed.discard(gkey)
                continue
            due = g.start + rule.hold_ms if rule.kind == "hold" else g.start
            if t < due:
                next_due = min(next_due, due)
                continue
            s.timed.discard(gkey)
            g.fired = True
            if rule.kind == "absent":
                del s.groups[gkey]
            due_now.append((due, rule.index, rule, g.events))
        s.next_due = next_due
        due_now.sort(key=lambda d: (d[0], d[1]))  # in time order
        for due, _i, rule, evidence in due_now:
            if rule.requires <= s.consent_at(due).monitoring:
                self._emit(rule, evidence, due, s, alerts, suppressed)
        if not s.timed:
            self._timed.discard(sid)

    def _emit(self, rule: CompiledRule, evidence: tuple[Signal, ...], at: int, s: _Session,
              alerts: list[Alert], suppressed: list[int]) -> None:
        trigger = evidence[-1]
        group = trigger.participant if rule.group_by == "participant" else ""
        data = trigger.data
        consent = s.consent_at(at)
        agreed = rule.capture and consent.recording in _AGREED
        severity = Severity.INFO if agreed else rule.severity
        fp_key: tuple[Any, ...] = (
            rule.index, group, *(_fingerprint_value(f, trigger, consent) for f in rule.fingerprint))
        # de-duplication and caps before any formatting work; an alert more severe than the
        # last one of its fingerprint (the recording policy changed) is not held back
        last = s.last_fired.get(fp_key)
        if last is not None and at - last[0] < rule.cooldown_ms and severity <= last[1]:
            suppressed[0] += 1
            return
        if s.counts.get(rule.index, 0) >= rule.max_per_session:
            suppressed[0] += 1
            return
        if s.total >= self.max_alerts_per_session:
            suppressed[0] += 1
            if not s.capped:  # the clinician is told once that alerts stopped here
                s.capped = True
                s.cap_skip = Skip(rule.id, trigger.session, trigger.participant, trigger.name,
                                  at, (), "alert_limit", self.max_alerts_per_session)
            return
        if s.inhibitions:
            tags = set(rule.tags)
            for until, who, itags, isev, irule in s.inhibitions:
                # lesser by the rules' own severities, and not raised above the inhibitor:
                # under an agreed policy a note folds the lesser notes of the same capture
                # (as its warning would), never a warning raised after the policy changed
                if (at < until and who in (group, "") and rule.severity < irule
                        and severity <= isev and tags & itags):
                    suppressed[0] += 1
                    return
        s.last_fired[fp_key] = (at, severity)
        s.counts[rule.index] = s.counts.get(rule.index, 0) + 1
        s.total += 1
        if rule.inhibit_tags:
            if s.inhibitions is None:
                s.inhibitions = deque(maxlen=16)
            s.inhibitions.append((at + rule.inhibit_ms, group, rule.inhibit_tags, severity,
                                  rule.severity))
        def lookup(name: str) -> Any:
            # the engine's own names first: a client's extra data fields never stand in
            # for them (a spoofed "count" or "participant" in the clinician's message)
            if name == "duration":
                dur = (rule.hold_ms if rule.kind in ("hold", "absent")
                       else max(0, trigger.at - evidence[0].at))
                return format_duration(dur)
            if name == "distinct":
                return ", ".join(sorted({e.participant if rule.field == "participant"
                                         else str(e.data.get(rule.field or "")) for e in evidence}))
            meta = {"signal": trigger.name, "source": trigger.source, "count": len(evidence),
                    "within": format_duration(rule.window_ms), "recording": consent.recording,
                    "signal_confidence": trigger.confidence,
                    "participant": trigger.participant}
            if name in meta:
                return meta[name]
            # the ending signal's field, else a correlation's other evidence (an earlier
            # step's device label or key: every step of a sequence or all_of is in the
            # evidence when it fires); a signal whose schema has the field first, so a
            # client's extra key of that name never replaces another step's own value
            found = next((e.data[name] for e in reversed(evidence)
                          if name in e.data and name in _schema_fields(e.name)), None)
            if found is not None:
                return found
            return data.get(name)

        template = rule.agreed_message if agreed and rule.agreed_message else rule.message
        message = render(template, lookup)
        if agreed and not rule.agreed_message:
            message += (f" Recording is permitted under the agreed policy "
                        f"({consent.recording.replace('_', ' ')}), so this is a note only.")
        confidence = round(rule.confidence * max(e.confidence for e in evidence), 3)
        session = trigger.session
        fingerprint = hashlib.sha1("\x1f".join([rule.id, *map(str, fp_key[1:])]).encode()
                                   ).hexdigest()[:16]
        aid = hashlib.sha1(f"{session}\x1f{fingerprint}\x1f{at}\x1f{s.total}".encode()
                           ).hexdigest()[:20]
        responses = (rule.agreed_suggested_response
                     if agreed and rule.agreed_suggested_response is not None
                     else rule.suggested_response)
        alerts.append(Alert(id=aid, rule=rule.id, severity=severity, title=rule.title,
                            message=message, suggested_response=responses,
                            evidence=tuple(evidence), confidence=confidence, session=session,
                            participant=trigger.participant, at=at, fingerprint=fingerprint,
                            tags=rule.tags))


def _at(signal: Signal) -> int:
    return signal.at


@functools.cache
def _schema_fields(name: str) -> frozenset[str]:
    """The data fields signal ``name``'s schema declares (not a client's extra keys)."""
    spec = CATALOGUE.get(name)
    return frozenset(spec.model.model_fields) if spec is not None else frozenset()


def _fingerprint_value(field: str, trigger: Signal, consent: Consent) -> str:
    """A fingerprint field's value: the signal's own name, source, participant, confidence
    or the recording policy for those names (never a data field of the same name), else the
    data field ("" when absent)."""
    if field == "signal":
        return trigger.name
    if field == "participant":
        return trigger.participant
    if field == "source":
        return trigger.source
    if field == "signal_confidence":
        return str(trigger.confidence)
    if field == "recording":
        return consent.recording
    return str(trigger.data.get(field, ""))


_EMPTY = Outcome()
#: consent used by ``replay`` and the rule fixtures when none is given
REPLAY_DEFAULT_CONSENT = FULL_MONITORING
