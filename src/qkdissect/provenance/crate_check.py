"""Validate a results folder's RO-Crate with ``roc-validator`` (profiles ro-crate-1.1 and process-run-crate),
offline: the RO-Crate JSON-LD context is served from the copy that ships with ``rocrate`` (ro-crate-py), and any
other URL the validator would fetch is refused (so a validation never depends on the network)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QKDissectError

PROFILES = ("ro-crate-1.1", "process-run-crate")
#: the RO-Crate contexts the validator asks for, answered with the copy shipped by ro-crate-py (the 1.3 context,
#: a superset of 1.1's terms with the same IRIs)
_CONTEXT_PREFIX = "https://w3id.org/ro/crate/"


@dataclass(frozen=True)
class Issue:
    profile: str
    severity: str  # REQUIRED | RECOMMENDED | OPTIONAL
    check: str
    message: str
    entity: str | None

    def __str__(self) -> str:
        where = f" [{self.entity}]" if self.entity else ""
        return f"{self.severity} {self.check}{where}: {' '.join(self.message.split())}"


def _offline_adapter() -> Any:
    """A requests transport adapter that answers RO-Crate context URLs from the shipped copy, refuses the rest."""
    import requests
    import rocrate
    from requests.adapters import BaseAdapter

    context = (Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld").read_bytes()

    class Offline(BaseAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
            url = str(request.url)
            if not (url.startswith(_CONTEXT_PREFIX) and url.rstrip("/").endswith("/context")):
                raise requests.ConnectionError(f"offline validation: {url} is not fetched")
            r = requests.Response()
            r.url, r.request, r.status_code, r._content = url, request, 200, context
            r.headers["Content-Type"] = "application/ld+json"
            return r

        def close(self) -> None:
            pass

    return Offline()


def validate_crate(
    results: str | Path, profiles: tuple[str, ...] = PROFILES, severity: str = "RECOMMENDED"
) -> list[Issue]:
    """The issues ``roc-validator`` finds in ``results``' RO-Crate at ``severity`` or above, for each profile."""
    try:
        from rocrate_validator import models, services
        from rocrate_validator.utils.http import HttpRequester
    except ImportError:
        raise QKDissectError(
            "validating a crate needs roc-validator: pip install 'qkdissect[test]' (or pip install roc-validator)"
        ) from None
    path = Path(results)
    if not (path / "ro-crate-metadata.json").is_file():
        raise QKDissectError(f"{path} has no ro-crate-metadata.json: write it first (`qkdissect crate {path}`)")
    issues = []
    for profile in profiles:
        settings = services.ValidationSettings(
            rocrate_uri=str(path.resolve()),
            profile_identifier=profile,
            requirement_severity=models.Severity[severity],
            no_cache=True,  # a plain requests session (no cache file), whose transport is the offline adapter
        )
        session = HttpRequester().session
        for prefix in ("http://", "https://"):
            session.mount(prefix, _offline_adapter())
        result = services.validate(settings)
        issues += [
            Issue(profile, i.severity.name, i.check.identifier, str(i.message), getattr(i, "violatingEntity", None))
            for i in result.get_issues()
        ]
    return issues
