"""The time an artefact records: now, in UTC, to the second, as ISO 8601 text (``2025-01-31T12:00:00+00:00``)."""

from __future__ import annotations

import datetime as _dt


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
