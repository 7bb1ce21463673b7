"""The time an artefact records (qkdissect.util.clock): now, in UTC, to the second."""

from __future__ import annotations

import datetime as dt

from qkdissect.util.clock import utc_now


def test_now_is_utc_to_the_second() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    text = utc_now()
    after = dt.datetime.now(dt.UTC)
    t = dt.datetime.fromisoformat(text)
    assert t.utcoffset() == dt.timedelta(0) and t.microsecond == 0 and text.endswith("+00:00")
    assert before <= t <= after
