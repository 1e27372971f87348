"""Per-session state of the sidecar, without I/O: who is connected, which signal ``seq``s each
patient has sent, whether each patient is live, the consent in force, pending recording
requests, and the ``status`` message clinicians see.

Time is injected (epoch ms) in every method, so the server's tick and the tests drive it.
A session outlives its connections (so a reconnecting patient's resent ``seq`` is still
recognised); :meth:`SessionRegistry.evict_idle` forgets sessions idle for a long time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rules.model import Severity
from signals.consent import (
    MONITORING_SCOPES,
    NO_CONSENT,
    RECORDING_POLICIES,
    Consent,
    RecordingPolicy,
    Scope,
)

__all__ = [
    "GAP_WORDS",
    "LIMIT_WORDS",
    "MEDIA_KINDS",
    "REFUSALS",
    "MediaStatus",
    "PatientState",
    "SdkStatus",
    "SeqTracker",
    "Session",
    "SessionRegistry",
    "merge_claim",
]

SdkStatus = Literal["connected", "silent", "disconnected"]
MediaStatus = Literal["flowing", "stopped", "none"]
#: the sentence a ``status`` gives for each media limit
LIMIT_WORDS = {
    "narrowband": ("audio from patient {participant} carries nothing above about 6.5 kHz "
                   "(a headset in its telephone mode, or a weak connection): shutter sounds "
                   "cannot be heard"),
    "lossy": ("audio from patient {participant} arrives with gaps (a connection losing "
              "packets): sounds in the gaps, a shutter among them, are missed"),
    "muted": ("the microphone of patient {participant} sends only silence (muted?): sounds "
              "near the patient, a shutter among them, are not heard"),
    "overloaded": ("{kind} from patient {participant} is analysed only in part: the "
                   "sidecar's analysis is falling behind (more calls than its CPU can "
                   "analyse, or a busy machine), so detections may come late or be missed"),
    "absent": ("{kind} from patient {participant} was offered but none has arrived (a "
               "connection that never got through, or an app that sends no {kind} at all)"),
    "failed": ("{kind} from patient {participant} is not analysed: the sidecar's {kind} "
               "analysis keeps failing on it (the sidecar's log says why)"),
    "busy": ("{kind} from patient {participant} is not analysed for now: this sidecar already "
             "analyses as many calls as it is set to (media.max_calls); the patient's app "
             "offers it again shortly"),
    "oversized": ("video from patient {participant} is not analysed: it arrived larger or "
                  "faster than the sidecar accepts, so the sidecar stopped receiving it (the "
                  "patient's app should send the reduced copy the SDK sends)"),
}
#: the sentence a ``status`` gives (in ``gaps``) for a patient whose app reported dropped signals
GAP_WORDS = ("the app of patient {participant} could not deliver {n} {signals} while it was "
             "offline (its queue for them was full): the record of this session has a gap, and "
             "any sign of recording among them was missed")
#: limits that are the reason media stopped (the sidecar refused it), not what flowing media
#: cannot carry: their words replace "has stopped" among a ``status``'s ``reasons``
REFUSALS = frozenset({"oversized", "failed", "absent", "busy"})
MEDIA_KINDS: tuple[Literal["audio", "video"], ...] = ("audio", "video")


class SeqTracker:
    """Which ``seq``s one participant has sent, as sorted runs of consecutive seqs.

    Each tab (and each page load) of the SDK numbers its signals upwards from its own start
    (``Date.now() * 1000``), so a participant's seqs form a few long runs, far apart: two tabs
    interleave two runs, and neither may make the other's seqs look seen. Out-of-order
    arrivals and resends fill gaps. At most ``max_runs`` runs are kept: beyond, the two with
    the smallest gap between them are joined (a gap that never fills, from signals the SDK
    had to drop, is given up on; the smallest first, so separate tabs' runs stay apart)."""

    __slots__ = ("_ends", "_starts", "max_runs")

    def __init__(self, max_runs: int = 32) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.max_runs = max(1, max_runs)

    @property
    def runs(self) -> list[tuple[int, int]]:
        """The runs seen, ``(first, last)``, in order."""
        return list(zip(self._starts, self._ends, strict=True))

    def first_time(self, seq: int) -> bool:
        """Record ``seq``; ``True`` if it was not seen before (so it must be processed)."""
        starts, ends = self._starts, self._ends
        i = bisect.bisect_right(starts, seq) - 1  # the run starting at or before seq
        if i >= 0 and seq <= ends[i]:
            return False
        after_left = i >= 0 and ends[i] == seq - 1
        before_right = i + 1 < len(starts) and starts[i + 1] == seq + 1
        if after_left and before_right:  # seq fills the gap between two runs
            ends[i] = ends[i + 1]
            del starts[i + 1], ends[i + 1]
        elif after_left:
            ends[i] = seq
        elif before_right:
            starts[i + 1] = seq
        else:
            starts.insert(i + 1, seq)
            ends.insert(i + 1, seq)
            if len(starts) > self.max_runs:
                gaps = [starts[k + 1] - ends[k] for k in range(len(starts) - 1)]
                k = gaps.index(min(gaps))
                ends[k] = ends[k + 1]
                del starts[k + 1], ends[k + 1]
        return True


@dataclass(slots=True)
class PatientState:
    """One patient of one session, across all of its connections."""

    participant: str
    connections: int = 0
    last_seen: int = 0
    silent: bool = False
    connected_at: int = 0  # when its first open connection came (see Session.media_wait_ms)
    media_overdue: bool = False  # consented media not received within media_wait_ms
    media: dict[str, MediaStatus] = field(
        default_factory=lambda: {"audio": "none", "video": "none"})
    #: what a flowing track cannot carry, by kind (``{"audio": "narrowband"}``)
    limits: dict[str, str] = field(default_factory=dict)
    seqs: SeqTracker = field(default_factory=SeqTracker)
    #: signals its app reported it had to drop (heartbeats' ``dropped``, offline queue full)
    lost: int = 0

    @property
    def sdk(self) -> SdkStatus:
        if self.connections == 0:
            return "disconnected"
        return "silent" if self.silent else "connected"


@dataclass(slots=True)
class Session:
    """The state of one session."""

    id: str
    consent: Consent = NO_CONSENT
    consent_from_token: bool = False
    recording_by_clinician: bool = False  # a clinician's consent.set came (see merge_claim)
    consent_unrecorded: bool = False  # the consent in force did not reach the ledger yet
    patients: dict[str, PatientState] = field(default_factory=dict)
    clinicians: int = 0
    idle_since: int | None = None
    pending_requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the latest decisions (request id -> (participant, approved)), for a patient that was
    #: disconnected when its request was decided; at most MAX_DECIDED_KEPT
    decided_requests: dict[str, tuple[str, bool]] = field(default_factory=dict)
    #: whether the requests waiting and decided were read back from the ledger (see
    #: :meth:`restore_requests`: a restarted sidecar, or a session forgotten while idle)
    requests_restored: bool = False
    known_alerts: set[str] = field(default_factory=set)
    #: alert fingerprint -> the most severe alert of it the clinicians marked a false alarm
    #: (see :meth:`learn_verdicts`): its repeats up to that severity reach them ``muted``
    muted: dict[str, int] = field(default_factory=dict)
    #: signals each patient's app reported dropped before this process held the session
    #: (read back from the ledger's status entries, see :meth:`restore_lost`): its count
    #: goes on from there when the patient is next seen
    lost_before: dict[str, int] = field(default_factory=dict)
    #: whether this sidecar analyses media at all (``media.enabled``)
    media_available: bool = True
    #: consented audio/video not received this long after a patient connected makes the
    #: session blind (``media.expect_within_s``; ``None``: never)
    media_wait_ms: int | None = None

    @property
    def connections(self) -> int:
        return self.clinicians + sum(p.connections for p in self.patients.values())

    def patient(self, participant: str) -> PatientState:
        state = self.patients.get(participant)
        if state is None:
            state = self.patients[participant] = PatientState(
                participant, lost=self.lost_before.pop(participant, 0))
        return state

    def in_scope(self, scope: str) -> bool:
        return self.consent.allows(scope)

    # -- liveness ------------------------------------------------------------------------

    def patient_connected(self, participant: str, now: int) -> PatientState:
        state = self.patient(participant)
        if state.connections == 0:
            state.connected_at = now
            state.media_overdue = False
        state.connections += 1
        state.last_seen = now
        state.silent = False
        self.idle_since = None
        return state

    def patient_disconnected(self, participant: str, now: int) -> PatientState:
        state = self.patient(participant)
        state.connections = max(0, state.connections - 1)
        if state.connections == 0:
            state.silent = False
            state.media = {"audio": "none", "video": "none"}
        self._maybe_idle(now)
        return state

    def clinician_connected(self) -> None:
        self.clinicians += 1
        self.idle_since = None

    def clinician_disconnected(self, now: int) -> None:
        self.clinicians = max(0, self.clinicians - 1)
        self._maybe_idle(now)

    def _maybe_idle(self, now: int) -> None:
        if self.connections == 0:
            self.idle_since = now

    def seen(self, participant: str, now: int) -> bool:
        """A message arrived from ``participant``; ``True`` if it was silent (recovered)."""
        state = self.patient(participant)
        state.last_seen = now
        if state.silent:
            state.silent = False
            return True
        return False

    def check_silence(self, now: int, timeout_ms: int) -> list[str]:
        """Patients that just went silent (connected, no message for ``timeout_ms``)."""
        changed = []
        for state in self.patients.values():
            if state.connections and not state.silent and now - state.last_seen >= timeout_ms:
                state.silent = True
                changed.append(state.participant)
        return changed

    def check_media_wait(self, now: int) -> bool:
        """Whether a connected patient just passed ``media_wait_ms`` without sending the
        audio or video its consent covers (the ``status`` then says so, once)."""
        wanted = [k for k in MEDIA_KINDS if k in self.consent.monitoring]
        if self.media_wait_ms is None or not self.media_available or not wanted:
            return False
        changed = False
        for state in self.patients.values():
            if (state.connections and not state.media_overdue
                    and now - state.connected_at >= self.media_wait_ms
                    and any(state.media.get(k) == "none" for k in wanted)):
                state.media_overdue = changed = True
        return changed

    def set_media(self, participant: str, kind: str, status: MediaStatus) -> bool:
        """Record a media state; ``True`` if it changed."""
        state = self.patient(participant)
        if state.media.get(kind) == status:
            return False
        state.media[kind] = status
        return True

    def signals_lost(self, participant: str, dropped: int) -> bool:
        """``participant``'s app reports it had to drop ``dropped`` signals (its offline queue
        was full): the record has a gap. ``True`` if that is news (``dropped`` > 0)."""
        if dropped <= 0:
            return False
        self.patient(participant).lost += dropped
        return True

    def restore_lost(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """The gaps the ledger ``entries`` (``status`` kind) record: each status lists every
        patient's ``lost`` count at its time, so a restarted sidecar (or a session forgotten
        while idle) goes on telling clinicians of a gap in the record instead of starting
        again from none. Counts only grow: the greatest one recorded is kept."""
        for entry in entries:
            body = entry.get("body")
            if entry.get("kind") != "status" or not isinstance(body, Mapping):
                continue
            participants = body.get("participants")
            for row in participants if isinstance(participants, list) else ():
                if not isinstance(row, Mapping):
                    continue
                who, lost = row.get("participant"), row.get("lost")
                if not isinstance(who, str) or type(lost) is not int or lost <= 0:
                    continue
                state = self.patients.get(who)
                if state is not None:
                    state.lost = max(state.lost, lost)
                else:
                    self.lost_before[who] = max(self.lost_before.get(who, 0), lost)

    def set_limit(self, participant: str, kind: str, limit: str | None) -> bool:
        """Record what ``kind`` from ``participant`` cannot carry (``None``: nothing known);
        ``True`` if it changed."""
        state = self.patient(participant)
        if state.limits.get(kind) == limit:
            return False
        if limit is None:
            del state.limits[kind]
        else:
            state.limits[kind] = limit
        return True

    # -- recording requests after a restart ------------------------------------------------

    def restore_requests(self, entries: Iterable[Mapping[str, Any]], keep: int) -> None:
        """What the ledger ``entries`` (``recording_request``, ``recording_decision`` and
        ``consent`` kinds, in chain order) say of recording requests, for a session this
        process did not hold yet (it restarted, or forgot the session while idle).

        A request without a decision waits again (a patient's later undecided request replaces
        an earlier one: that one was lost by a sidecar from before requests were restored); the
        last ``keep`` decisions are remembered for a patient that asks again; the recording
        policy a clinician set last (``consent.set``, or an approval) stays, as it does when
        the clinician set it before the first patient came (see :func:`merge_claim`). Requests
        already in memory are kept. Once a patient token had set the session's consent, the
        consent last in force (its scopes, which tokens only ever narrowed, and its policy)
        is in force again, so the next token narrows it further instead of setting it afresh:
        a scope withdrawn before the restart stays withdrawn."""
        asked: dict[str, dict[str, Any]] = {}
        decided: dict[str, tuple[str, bool]] = {}
        recording: str | None = None
        # the consent in force once a patient token had set it: scopes, recording policy
        scopes: frozenset[Scope] | None = None
        policy: RecordingPolicy = self.consent.recording
        for entry in entries:
            body = entry.get("body")
            if not isinstance(body, Mapping):
                continue
            kind = entry.get("kind")
            rid = str(body.get("id", ""))
            if kind == "recording_request" and rid:
                participant = str(body.get("participant", ""))
                for old in [k for k, r in asked.items() if r["participant"] == participant]:
                    del asked[old]
                asked[rid] = {"type": "recording.request", "id": rid,
                              "participant": participant, "reason": str(body.get("reason", "")),
                              "at": body.get("at", entry.get("at"))}
            elif kind == "recording_decision" and rid in asked:
                request = asked.pop(rid)
                decided.pop(rid, None)
                decided[rid] = (str(request["participant"]), body.get("approve") is True)
            elif kind == "consent":
                monitoring = body.get("monitoring")
                if (body.get("by") == "token" or scopes is not None) and \
                        isinstance(monitoring, list):
                    scopes = frozenset(m for m in MONITORING_SCOPES if m in monitoring)
                    stored = body.get("recording")
                    policy = next((r for r in RECORDING_POLICIES if r == stored), policy)
                if str(body.get("by", "")).startswith("clinician:"):
                    recording = str(body.get("recording", ""))
        for rid, request in asked.items():
            if not any(r["participant"] == request["participant"]
                       for r in self.pending_requests.values()):
                self.pending_requests.setdefault(rid, request)
        kept = dict(list(decided.items())[-keep:] if keep > 0 else [])
        self.decided_requests = {**kept, **self.decided_requests}
        if scopes is not None and not self.consent_from_token:
            # the scopes the session's patient tokens had narrowed it to: a later token only
            # narrows them further, as before the restart (a withdrawn scope must not come
            # back with the next token). The engine and the media learn them, and the ledger
            # records them again, when the next patient connects (see Sidecar._open).
            self.consent = Consent(scopes, policy)
            self.consent_from_token = True
            self.consent_unrecorded = True
        if recording in RECORDING_POLICIES and not self.recording_by_clinician:
            self.consent = self.consent.with_recording(recording)
            self.recording_by_clinician = True
        self.requests_restored = True

    # -- clinicians' verdicts ----------------------------------------------------------------

    def learn_verdicts(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Which repeats the clinicians asked not to be alerted to, from the ledger ``entries``
        (``alert`` and ``feedback`` kinds, in chain order; also after a restart): an alert
        marked ``false_positive`` mutes its fingerprint (same rule, same evidence key) up to
        its severity, so a later repeat at that severity or below is still stored and
        delivered, with ``muted``, but not announced. A ``confirmed`` verdict on any alert of
        the fingerprint ends it. Alerts stored without a fingerprint (an older sidecar) are
        left alone."""
        alerts: dict[str, tuple[str, int]] = {}
        muted: dict[str, int] = {}
        for entry in entries:
            body = entry.get("body")
            if not isinstance(body, Mapping):
                continue
            kind = entry.get("kind")
            if kind == "alert":
                fingerprint, severity = body.get("fingerprint"), body.get("severity")
                if isinstance(fingerprint, str) and fingerprint and isinstance(severity, str) \
                        and severity.upper() in Severity.__members__:
                    alerts[str(body.get("id"))] = (fingerprint, int(Severity.parse(severity)))
            elif kind == "feedback" and str(body.get("id")) in alerts:
                fingerprint, rank = alerts[str(body.get("id"))]
                if body.get("verdict") == "false_positive":
                    muted[fingerprint] = max(rank, muted.get(fingerprint, rank))
                elif body.get("verdict") == "confirmed":
                    muted.pop(fingerprint, None)
        self.muted = muted

    def is_muted(self, fingerprint: str, severity: int) -> bool:
        """Whether an alert of ``fingerprint`` at ``severity`` repeats one marked a false
        alarm (a more severe one is not muted)."""
        level = self.muted.get(fingerprint)
        return level is not None and severity <= level

    # -- status ----------------------------------------------------------------------------

    def status(self, now: int) -> dict[str, Any]:
        """The ``status`` message of docs/internals.md. ``blind`` is true whenever the sidecar
        cannot see what the consent says it should: no patient channel, a patient
        disconnected or silent, nothing consented, or consented media that stopped.
        ``limited`` lists what flowing media cannot show (narrowband audio: no shutter
        sounds), without making the session blind; a refusal (:data:`REFUSALS`) on stopped
        media is the reason it stopped. ``gaps`` says, per patient, how many signals its app
        reported it could not deliver (:data:`GAP_WORDS`): a gap in the record, past, so it
        makes the session neither blind nor limited."""
        reasons: list[str] = []
        limited: list[str] = []
        gaps: list[str] = []
        participants = []
        monitoring = self.consent.monitoring
        if not self.patients or not any(p.connections for p in self.patients.values()):
            reasons.append("no patient is connected")
        if not monitoring:
            reasons.append("the patient has not consented to any monitoring")
        media_wanted = [k for k in MEDIA_KINDS if k in monitoring]
        if media_wanted and not self.media_available:
            reasons.append(f"this sidecar does not analyse camera or microphone (media "
                           f"analysis is turned off): the consented {' and '.join(media_wanted)} "
                           f"{'is' if len(media_wanted) == 1 else 'are'} not watched")
        for state in sorted(self.patients.values(), key=lambda p: p.participant):
            participants.append({"participant": state.participant, "sdk": state.sdk,
                                 "media": dict(state.media), "limits": dict(state.limits),
                                 "lost": state.lost})
            if state.lost:
                gaps.append(GAP_WORDS.format(participant=state.participant, n=state.lost,
                                             signals="signal" if state.lost == 1 else "signals"))
            if state.sdk == "disconnected":
                reasons.append(f"patient {state.participant} is disconnected")
            elif state.sdk == "silent":
                reasons.append(f"patient {state.participant} has gone silent")
            for kind in MEDIA_KINDS:
                limit = state.limits.get(kind)
                if (kind in monitoring and state.media_overdue and state.connections
                        and self.media_available and state.media.get(kind) == "none"):
                    reasons.append(f"no {kind} has arrived from patient {state.participant}, "
                                   f"although the consent covers it (the patient's app has not "
                                   f"sent it: not attached, or no permission)")
                if kind in monitoring and state.media.get(kind) == "stopped":
                    # a refusal says why the media stopped (video the sidecar refused)
                    reasons.append(LIMIT_WORDS[limit].format(participant=state.participant,
                                                             kind=kind)
                                   if limit in REFUSALS
                                   else f"{kind} from patient {state.participant} has stopped")
                if kind in monitoring and state.media.get(kind) == "flowing" and limit:
                    limited.append(LIMIT_WORDS.get(limit, f"{kind} is {limit}").format(
                        participant=state.participant, kind=kind))
        return {
            "type": "status",
            "session": self.id,
            "at": now,
            "blind": bool(reasons),
            "consent": self.consent.to_dict(),
            "participants": participants,
            "reasons": reasons,
            "limited": limited,
            "gaps": gaps,
        }


def merge_claim(current: Consent, claim: Consent, first: bool,
                keep_recording: bool = False) -> Consent:
    """The session consent after a patient token with ``claim`` connects.

    The first patient token sets it; a later one can only narrow monitoring (the
    intersection), so no scope is analysed that some patient of the session did not grant.
    ``keep_recording``: a clinician set the recording policy (``consent.set``) before the
    first patient came; that later, explicit decision stays, and the token sets monitoring.
    """
    if first:
        return Consent(claim.monitoring, current.recording) if keep_recording else claim
    return Consent(current.monitoring & claim.monitoring, current.recording)


class SessionRegistry:
    """Every session the process has seen, by id; new ones get the process's media facts
    (see :attr:`Session.media_available`, :attr:`Session.media_wait_ms`)."""

    def __init__(self, *, media_available: bool = True, media_wait_ms: int | None = None) -> None:
        self.sessions: dict[str, Session] = {}
        self.media_available = media_available
        self.media_wait_ms = media_wait_ms

    def get(self, session: str) -> Session:
        state = self.sessions.get(session)
        if state is None:
            state = self.sessions[session] = Session(
                session, media_available=self.media_available, media_wait_ms=self.media_wait_ms)
        return state

    def active(self) -> int:
        return sum(1 for s in self.sessions.values() if s.connections)

    def evict_idle(self, now: int, idle_ms: int) -> list[str]:
        """Forget sessions without connections for ``idle_ms``; returns their ids."""
        gone = [s.id for s in self.sessions.values()
                if s.idle_since is not None and now - s.idle_since >= idle_ms]
        for sid in gone:
            del self.sessions[sid]
        return gone
