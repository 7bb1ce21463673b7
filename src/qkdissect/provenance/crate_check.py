"""Validate a results folder's RO-Crate with ``roc-validator`` against one profile with the profiles it builds on
(workflow-run-crate, which takes in process-run-crate, workflow-ro-crate and ro-crate-1.1; process-run-crate, which
takes in ro-crate-1.1, for a crate written without the workflow), in one pass, offline: the RO-Crate JSON-LD
context is served from the copy that ships with ``rocrate`` (ro-crate-py), with RO-Crate 1.1's own IRIs for the
Bioschemas terms where the later copy changed them, and any other URL the validator would fetch is refused (so a
validation never depends on the network).

One recommendation of the Process Run Crate profile cannot hold for a Workflow RO-Crate on disk: "the
SoftwareApplication id SHOULD be an absolute URI" is checked on every SoftwareSourceCode, and so on the main
workflow, which the Workflow RO-Crate profile REQUIRES to be a File of the crate (a relative id, resolved to a
``file://`` URI on disk). That one finding, on the main workflow only, is reported apart (:data:`KNOWN_CONFLICT`,
roc-validator's issue crs4/rocrate-validator#51), not counted as a failure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QKDissectError

#: the profile a crate is validated against, with the profiles it builds on (roc-validator takes them in: a second
#: pass of ro-crate-1.1 alone would only run its checks again and report each of its issues twice)
PROFILE = "workflow-run-crate"
#: the profile of a crate without the workflow (written by hand for results made by single commands)
PROCESS_PROFILE = "process-run-crate"
WORKFLOW_RUN_CRATE = "https://w3id.org/ro/wfrun/workflow/0.5"
#: the check that contradicts the Workflow RO-Crate profile for the main workflow (see the module's docstring)
KNOWN_CONFLICT = "process-run-crate-0.5_5.1"
#: RO-Crate 1.1's IRIs of the Bioschemas terms that the shipped (later) context maps elsewhere
_CONTEXT_1_1 = {
    "ComputationalWorkflow": "https://bioschemas.org/ComputationalWorkflow",
    "FormalParameter": "https://bioschemas.org/FormalParameter",
    "input": "https://bioschemas.org/ComputationalWorkflow#input",
    "output": "https://bioschemas.org/ComputationalWorkflow#output",
}
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

    shipped = json.loads((Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld").read_text())
    shipped["@context"].update(_CONTEXT_1_1)
    context = json.dumps(shipped).encode()

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


def crate_profile(results: str | Path) -> str:
    """The profile to validate a crate against: the Workflow Run Crate's when it says it conforms to it."""
    try:
        graph = json.loads((Path(results) / "ro-crate-metadata.json").read_text()).get("@graph", [])
    except (OSError, json.JSONDecodeError, AttributeError):
        return PROFILE
    root = next((e for e in graph if isinstance(e, dict) and e.get("@id") == "./"), {})
    said = root.get("conformsTo") or []
    ids = {e.get("@id") for e in (said if isinstance(said, list) else [said]) if isinstance(e, dict)}
    return PROFILE if WORKFLOW_RUN_CRATE in ids else PROCESS_PROFILE


def _main_workflow_uri(path: Path) -> str | None:
    try:
        graph = json.loads((path / "ro-crate-metadata.json").read_text()).get("@graph", [])
        root = next(e for e in graph if isinstance(e, dict) and e.get("@id") == "./")
        return (path.resolve() / str(root["mainEntity"]["@id"])).as_uri()
    except (OSError, json.JSONDecodeError, AttributeError, StopIteration, KeyError, TypeError):
        return None


def validate_crate(
    results: str | Path,
    profile: str | None = None,
    severity: str = "RECOMMENDED",
    known: list[Issue] | None = None,
) -> list[Issue]:
    """The issues ``roc-validator`` finds in ``results``' RO-Crate at ``severity`` or above against ``profile``
    (default: :func:`crate_profile`) and the profiles it builds on, each issue named with the profile of its check;
    the known conflict of the profiles on the main workflow (:data:`KNOWN_CONFLICT`) goes into ``known`` (when
    given) instead."""
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
    main = _main_workflow_uri(path)
    settings = services.ValidationSettings(
        rocrate_uri=str(path.resolve()),
        profile_identifier=profile or crate_profile(path),
        enable_profile_inheritance=True,  # the profiles it builds on, ro-crate-1.1 among them
        requirement_severity=models.Severity[severity],
        no_cache=True,  # a plain requests session (no cache file), whose transport is the offline adapter
    )
    session = HttpRequester().session
    for prefix in ("http://", "https://"):
        session.mount(prefix, _offline_adapter())
    issues = []
    for i in services.validate(settings).get_issues():
        own = i.check.requirement.profile.identifier
        issue = Issue(own, i.severity.name, i.check.identifier, str(i.message), getattr(i, "violatingEntity", None))
        if main and i.check.identifier == KNOWN_CONFLICT and str(getattr(i, "violatingPropertyValue", "")) == main:
            (known if known is not None else []).append(issue)
        else:
            issues.append(issue)
    return issues
