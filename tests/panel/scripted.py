"""A tiny rules engine with the real ``rules.model`` types, for panel tests that must not
depend on how the default rules are tuned: a hidden tab gives a warning, a screenshot key a
critical alert, at once and deterministically; a focus change reports a video rule skipped
for lack of consent."""

from __future__ import annotations

from rules.model import Alert, Outcome, Severity, Skip
from signals.consent import Consent
from signals.model import Signal

__all__ = ["ScriptedEngine"]


class ScriptedEngine:
    def __init__(self) -> None:
        self.count = 0

    def set_consent(self, session: str, consent: Consent, now: int) -> None:
        pass

    def tick(self, now: int) -> Outcome:
        return Outcome()

    def end_session(self, session: str) -> None:
        pass

    def feed(self, signal: Signal, now: int) -> Outcome:
        response: tuple[str, ...]
        if signal.name == "client.visibility" and signal.data.get("state") == "hidden":
            rule, severity, title = "tab-hidden", Severity.WARNING, "The patient left the call tab"
            message, confidence = "The call tab was hidden while the session was running.", 0.6
            response = ("Ask gently whether everything is all right.",)
        elif signal.name == "client.key" and signal.data.get("combo") == "Limit":
            # as if the session had raised the engine's limit of alerts
            return Outcome(skipped=(Skip("screenshot-key", signal.session, signal.participant,
                                         signal.name, signal.at, (), "alert_limit", 200),))
        elif signal.name == "client.key":
            rule, severity, title = "screenshot-key", Severity.CRITICAL, "Screenshot keys pressed"
            message, confidence = "The patient pressed a screenshot key combination.", 0.9
            response = ("Remind the patient of the recording policy.",
                        "Ask whether they took a screenshot.")
        elif signal.name == "client.focus":
            # as if a video rule could not run: the patient did not consent to video
            return Outcome(skipped=(Skip("camera-covered", signal.session, signal.participant,
                                         signal.name, signal.at, ("video",)),))
        else:
            return Outcome()
        self.count += 1
        alert = Alert(id=f"{rule}-{self.count}", rule=rule, severity=severity, title=title,
                      message=message, suggested_response=response, evidence=(signal,),
                      confidence=confidence, session=signal.session,
                      participant=signal.participant, at=signal.at,
                      fingerprint=f"{rule}:{signal.session}")
        return Outcome(alerts=(alert,))
