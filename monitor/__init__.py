"""Every adapter of sessionguard: the WebSocket server, media tracks, storage, delivery,
metrics and the command line. The pure cores live in :mod:`signals` and :mod:`rules`."""

__all__: list[str] = []
