"""The README is the user's manual: it must stay true to the code."""
import re
from pathlib import Path

from fastdqn.config import PRESETS, all_fields

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_setting_and_preset_is_documented():
    missing = [name for name in all_fields() if f"`{name}`" not in README and f"{name}`" not in README]
    assert not missing, f"settings missing from README: {missing}"
    assert all(f"`{p}`" in README for p in PRESETS)


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    block = README.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["python3 dev.py bench", "python3 dev.py test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^python3 dev\.py test\b", ci, re.M)

