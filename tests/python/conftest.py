"""Fixtures of the kivi package's tests: the bundled tiny models, loaded by transformers in
float32 on the CPU (or the GPU machine's GPU with KIVI_TEST_DEVICE=cuda)."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
MODELS = {"llama": REPO / "models" / "kivi-llama-tiny", "qwen2": REPO / "models" / "kivi-qwen2-tiny"}
DEVICE = os.environ.get("KIVI_TEST_DEVICE", "cpu")

kivi = pytest.importorskip(
    "kivi", reason="the kivi package is not installed (pip install --no-build-isolation ./python)")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def load(family: str, attn: str = "kivi"):
    model = AutoModelForCausalLM.from_pretrained(MODELS[family], dtype=torch.float32,
                                                 attn_implementation=attn)
    return model.to(DEVICE).eval()


@pytest.fixture(scope="session", params=sorted(MODELS))
def family(request):
    return request.param


@pytest.fixture(scope="session")
def tokenizer(family):
    return AutoTokenizer.from_pretrained(MODELS[family])


@pytest.fixture(scope="session")
def text():
    """Public-domain prose (data/SOURCES in the README): prompts long enough to leave the
    128-token full-precision window, so keys and values are really quantized."""
    return (REPO / "data" / "persuasion-ch1-6.txt").read_text()
