"""Names that reach a shell or a path, through Snakemake's dry run: a config name never runs a command or writes
outside results/, every named section has the safe name pattern, and config keys reach the shell quoted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.workflow import snakemake, write_config

HOSTILE_NAMES = ["x';touch PWNED;'", "../../../../escaped", "a b", "$(touch PWNED)", ".hidden", "a/b"]


@pytest.mark.parametrize("section", ["galleries", "s17"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_figure_names_that_would_reach_a_shell_or_leave_results_are_refused(
    tmp_path: Path, section: str, name: str
) -> None:
    entry = [{"model": "dinov2-vits14-imgfocus"}] if section == "galleries" else {"model": "dinov2-vits14-imgfocus"}
    cfg = write_config(tmp_path, {"models": {"dinov2-vits14-imgfocus": None}, "figures": {section: {name: entry}}})
    work = tmp_path / "run"
    r = snakemake(work, "-n", config=cfg, check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Error validating config" in out and "does not match" in out, out[-2000:]
    assert not (work / "PWNED").exists() and not (tmp_path / "PWNED").exists()
    assert not list(tmp_path.rglob("escaped*"))


@pytest.mark.parametrize("section", ["models", "images", "mask_datasets", "texts"])
def test_every_named_section_has_the_safe_name_pattern(tmp_path: Path, section: str) -> None:
    cfg: dict = {"models": {"dinov2-vits14-imgfocus": None}}
    bad = "x';touch PWNED;'"
    cfg[section] = {**cfg.get(section, {}), bad: {"source": "skimage"} if section != "models" else None}
    r = snakemake(tmp_path / "run", "-n", config=write_config(tmp_path, cfg), check=False)
    assert r.returncode != 0 and "does not match" in r.stdout + r.stderr
    assert not list(tmp_path.rglob("PWNED"))


def test_config_keys_reach_the_shell_quoted_and_the_config_path_does_not(tmp_path: Path) -> None:
    """The rules' commands carry their config sections as one quoted word, and not the config file's path: the
    same config at another path is the same job (the path reaches the jobs through the environment)."""
    import shlex

    cfg = write_config(tmp_path, {"models": {"dinov2-vits14-imgfocus": None}, "figures": {"s1": [], "s2": []}})
    r = snakemake(tmp_path / "run", "-n", "-p", config=cfg)
    commands = [ln.split("Shell command: ", 1)[1] for ln in r.stdout.splitlines() if ln.startswith("Shell command: ")]
    commands = [c for c in commands if c != "None"]  # the target rules run no command
    assert len(commands) >= 6  # weights, modes, scores, two Fig. 3, the crate
    for cmd in commands:
        assert str(cfg) not in cmd
        words = shlex.split(cmd)
        keys = [w for w in words if w.startswith("QKDISSECT_CONFIG_KEYS=")]
        assert len(keys) == 1 and keys[0].split("=", 1)[1].startswith("[")
