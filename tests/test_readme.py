"""README.md's Python example runs verbatim.

The README text is not changed: its ```python blocks run as they are, in a temporary
working directory laid out like a checkout after `make demo`'s data step, where the
relative paths they name (`recipes/vi/quickstart.yaml`, `data/vi/clir`) hold tiny
stand-ins: the shipped quickstart recipe with the tiny teacher and student and the
fixture bitext, and the toy BEIR folder of test_evaluate.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from test_evaluate import beir_folder  # noqa: F401  (fixture: toy BEIR folder)
from tiny_models import BITEXT_VI

REPO = Path(__file__).parents[1]
README = REPO / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_readme_has_a_python_example():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks and "from optical import" in blocks[0]


@pytest.fixture()
def demo_checkout(tmp_path, beir_folder, tiny_teacher_st, tiny_student, monkeypatch):  # noqa: F811
    """A working directory with recipes/vi/quickstart.yaml and data/vi/{train.tsv,clir}."""
    work = tmp_path / "work"
    (work / "recipes" / "vi").mkdir(parents=True)
    (work / "data" / "vi").mkdir(parents=True)
    shutil.copy(BITEXT_VI, work / "data" / "vi" / "train.tsv")
    shutil.copytree(beir_folder, work / "data" / "vi" / "clir")
    # The shipped recipe, with the tiny models and CPU-second budgets; its relative
    # bitext, eval and output paths stay as they are.
    recipe = yaml.safe_load((REPO / "recipes" / "vi" / "quickstart.yaml").read_text(encoding="utf-8"))
    recipe["teacher"]["model"] = str(tiny_teacher_st)
    recipe["student"]["model"] = str(tiny_student)
    recipe["bitext"]["heldout"] = 8
    recipe["train"].update(batch_size=8, checkpoint_every=5, eval_every=5)
    recipe["eval"]["batch_size"] = 16
    assert recipe["bitext"]["path"] == "data/vi/train.tsv" and recipe["eval"]["path"] == "data/vi/clir"
    (work / "recipes" / "vi" / "quickstart.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False),
                                                              encoding="utf-8")
    monkeypatch.chdir(work)
    return work


def test_readme_python_example_runs_verbatim(demo_checkout):
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    namespace: dict = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, f"{README}:python", "exec"), namespace)
    result, report = namespace["result"], namespace["report"]
    assert Path(result.run_dir).resolve().is_relative_to(demo_checkout.resolve())
    assert result.steps == 10  # the README's train.steps=10 override
    assert (Path(result.run_dir) / "student" / "modules.json").is_file()
    clir = report["tasks"]["clir"]
    assert clir["n_queries"] == 11 and clir["corpus_size"] == 12
    assert all(0.0 <= value <= 1.0 for value in clir["metrics"].values())
    assert clir["metrics"]["R@100"] == 1.0  # 12 documents: every mate is retrieved
