"""Write requirements/lock.txt: every package of qkdissect's dependency closure (with its extras workflow,
test and docs) at the version installed in the environment this runs in, the one the tests passed in.

    python requirements/lock.py            # after the tests passed; then set pyproject's lower bounds to match

Markers are evaluated for this machine, so the lock is that platform's (the CUDA wheels torch pulls in on Linux);
``pip install -c requirements/lock.txt -e '.[workflow,test,docs]'`` (what ``make`` does) installs exactly it.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata as md
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT, EXTRAS = "qkdissect", ("docs", "test", "workflow")
LOCK = Path(__file__).with_name("lock.txt")


def closure(root: str = ROOT, extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """Installed name -> version of every distribution ``root[extras]`` needs here (``root`` itself left out)."""
    todo, seen, versions = [(root, frozenset(extras))], set(), {}
    while todo:
        name, wanted = todo.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        dist = md.distribution(name)
        versions[canonicalize_name(dist.metadata["Name"])] = dist.version
        envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, frozenset(req.extras)))
    del versions[canonicalize_name(root)]
    return dict(sorted(versions.items()))


def main() -> None:
    py = platform.python_version()
    header = [
        f"# The environment qkdissect's tests pass in: {ROOT}[{','.join(EXTRAS)}] and everything it pulls in,",
        f"# as installed on Python {py}, {sys.platform} {platform.machine()}. Written by requirements/lock.py.",
        "# Install it: pip install -c requirements/lock.txt -e '.[workflow,test,docs]'",
    ]
    LOCK.write_text("\n".join([*header, *(f"{n}=={v}" for n, v in closure().items())]) + "\n")
    print(f"{LOCK}: {len(closure())} packages")


if __name__ == "__main__":
    main()
