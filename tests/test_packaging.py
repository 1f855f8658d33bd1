"""The project's set-up files agree with each other and with what README promises."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(requirements: list[str]) -> dict[str, str]:
    return {_name(r): r.replace(" ", "") for r in requirements}


def test_environment_yml_pip_section_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = _pins(project["dependencies"] + extras["test"] + extras["export"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    got = _pins(pip_sections[0])
    assert got == wanted, f"environment.yml pip section differs from pyproject: {set(got.items()) ^ set(wanted.items())}"
    assert "python=3.11" in env["dependencies"]


def test_the_test_command_installs_the_export_extra():
    assert '"$ROOT[test,export]"' in (ROOT / "scripts" / "_env.sh").read_text()


def test_readme_gives_exactly_the_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up commands\s+```bash\n(.*?)```", readme, re.S)
    assert block, "README.md needs a '## Set-up commands' bash block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.split("#")[0].strip()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert (ROOT / script).is_file(), script


def test_python_dash_m_is_the_same_cli():
    out = subprocess.run([sys.executable, "-m", "video_nl", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("train", "test", "predict", "info", "convert", "make-synthetic", "visualize", "bench",
                    "extract-features", "export"):
        assert command in out.stdout
