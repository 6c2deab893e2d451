"""The examples in roformer_core's and roformer_torch's docstrings run and print what they say."""

import doctest
import importlib

import pytest

MODULES = ["roformer_core", "roformer_core.config", "roformer_core.errors", "roformer_core.io",
           "roformer_core.rotary", "roformer_core.safetensors_io", "roformer_core.checkpoint",
           "roformer_core.outputs", "roformer_core.generation", "roformer_core.inputs", "roformer_core.tokenizer",
           "roformer_core.wordpiece", "roformer_core.vocab_builder", "roformer_core.heads", "roformer_core.lifecycle",
           "roformer_core.formats", "roformer_core.torch_pickle", "roformer_core.collator", "roformer_core.hub",
           "roformer_core.similarity", "roformer_core.backends", "roformer_core.pipelines", "roformer_core.pipelines.base",
           "roformer_core.pipelines.fill_mask", "roformer_core.pipelines.classification",
           "roformer_core.pipelines.question_answering", "roformer_core.pipelines.generation", "roformer_core.cli", "roformer_torch", "roformer_torch.modeling"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
    assert result.attempted > 0, f"{name} has no docstring examples"
