"""One Flux home for every command and resource: --home, then $FLUX_HOME, then the default."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flux_pipelines.audit.trail import contract_version_record, default_trail
from flux_pipelines.cli.main import app
from flux_pipelines.home import DEFAULT_HOME, FLUX_HOME_ENV, resolve_home
from flux_pipelines.resources.warehouse import FluxWarehouse


def test_precedence_is_explicit_then_environment_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # never the working directory's .flux
    monkeypatch.delenv(FLUX_HOME_ENV, raising=False)
    assert resolve_home() == DEFAULT_HOME.resolve()
    assert FluxWarehouse().root == DEFAULT_HOME.resolve()
    monkeypatch.setenv(FLUX_HOME_ENV, str(tmp_path / "env_home"))
    assert resolve_home() == tmp_path / "env_home"
    assert FluxWarehouse().root == tmp_path / "env_home"
    assert resolve_home("rel") == elsewhere / "rel"  # explicit wins, made absolute
    assert FluxWarehouse(home=str(tmp_path / "x")).root == tmp_path / "x"


def test_a_command_run_elsewhere_reads_the_trail_the_pipeline_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv(FLUX_HOME_ENV, str(home))
    # what the pipeline (and the certification gate) use: the default trail of the home
    default_trail().append_many([contract_version_record("meteorites", "9.9.9", "ab" * 32)])
    cwd = tmp_path / "somewhere_else"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(app, ["audit", "show", "--kind", "contract_version", "--json"])
    assert result.exit_code == 0, result.output
    assert "9.9.9" in result.output
    assert not (cwd / ".flux").exists(), "nothing written under the working directory"
