"""The examples in the docstrings run and print what they show (the losses, the solver,
the masks, the file helpers, the recipe overrides, the model card, the curves)."""

import doctest
import importlib

import pytest

MODULES = ["optical.losses.token_ot", "optical.losses.mse", "optical.losses.infonce", "optical.losses.sigrot",
           "optical.ot.sinkhorn", "optical.ot.masks", "optical.files",
           "optical.training.warm_start", "optical.eval.retrieval", "optical.recipe", "optical.eval.compare",
           "optical.eval.index", "optical.eval.mteb",
           "optical.publish.card", "optical.plots"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
