"""Prometheus metrics of the sidecar, all named ``sessionguard_*``, on an injected registry.

Tests build ``Metrics(CollectorRegistry())`` and read values with
``registry.get_sample_value(name, labels)``; :meth:`Metrics.render` is the only I/O seam.
``sessionguard_audit_write_seconds`` is registered by :class:`monitor.store_async.AsyncStore`
on the same registry, and the webhook counters by :mod:`monitor.webhooks` when it takes one.
Labels carry rule ids, signal names, roles and reasons only: never session or participant ids.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric the server, the store adapter and the webhook sender update."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge(
            "sessionguard_active_sessions", "Sessions with at least one open channel", registry=r)
        self.connections = Gauge(
            "sessionguard_connections", "Open WebSocket channels by role", ["role"], registry=r)
        self.handshakes_refused = Counter(
            "sessionguard_handshakes_refused_total", "WebSocket handshakes refused, by HTTP status",
            ["status"], registry=r)
        self.signals = Counter(
            "sessionguard_signals_total", "Signals accepted, by signal name", ["signal"],
            registry=r)
        self.signals_dropped = Counter(
            "sessionguard_signals_dropped_total",
            "Signals acknowledged but not processed (duplicate seq, outside consent)",
            ["reason"], registry=r)
        self.alerts = Counter(
            "sessionguard_alerts_total", "Alerts raised, by rule and severity",
            ["rule", "severity"], registry=r)
        self.alerts_muted = Counter(
            "sessionguard_alerts_muted_total",
            "Alerts delivered muted: repeats of an alert the clinicians marked a false alarm",
            ["rule"], registry=r)
        self.invalid_messages = Counter(
            "sessionguard_invalid_messages_total", "Rejected messages, by reason",
            ["reason"], registry=r)
        self.disconnects = Counter(
            "sessionguard_forced_disconnects_total",
            "Channels the sidecar closed (slow reader, flood, token expired)", ["reason"],
            registry=r)
        self.rule_eval = Histogram(
            "sessionguard_rule_evaluation_seconds", "Time in engine.feed / engine.tick",
            buckets=_FAST, registry=r)
        self.delivery_latency = Histogram(
            "sessionguard_signal_to_delivery_seconds",
            "From a signal's arrival to its alert being queued to every clinician",
            buckets=_FAST, registry=r)
        self.status_changes = Counter(
            "sessionguard_status_changes_total", "Status messages sent to clinicians, by cause",
            ["cause"], registry=r)
        self.media_frames = Counter(
            "sessionguard_media_frames_total",
            "Frames of patients' media by kind and outcome: received, analysed, skipped (over "
            "the analysis rate, by design), dropped (the analysis thread was busy), errors",
            ["kind", "outcome"], registry=r)
        self.media_flowing = Gauge(
            "sessionguard_media_flowing", "Patients' media tracks being received, by kind",
            ["kind"], registry=r)

        self._signal_children: dict[str, object] = {}
        self._frame_children: dict[tuple[str, str], object] = {}

    def count_signal(self, name: str) -> None:
        """``sessionguard_signals_total{signal=name}`` + 1 (the labelled child is looked up
        once per name: this runs for every signal)."""
        child = self._signal_children.get(name)
        if child is None:
            child = self._signal_children[name] = self.signals.labels(name)
        child.inc()  # type: ignore[attr-defined]

    def count_frames(self, kind: str, counts: dict[str, int]) -> None:
        """``sessionguard_media_frames_total{kind, outcome}`` + each of ``counts``."""
        for outcome, n in counts.items():
            child = self._frame_children.get((kind, outcome))
            if child is None:
                child = self._frame_children[(kind, outcome)] = self.media_frames.labels(
                    kind, outcome)
            child.inc(n)  # type: ignore[attr-defined]

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
