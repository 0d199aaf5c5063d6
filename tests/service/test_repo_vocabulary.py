"""Repository-vocabulary decoding through the service: a repository's completions write only names it knows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import openai
import pytest
import torch

from testkit.models import byte_tokenizer, tiny_llama
from tests.conftest import make_git_repo, wait_job

REPO = {"calc/ops.py": "def add_numbers(a: int, b: int) -> int:\n    return a + b\n\n\n"
                       "def multiply_numbers(a: int, b: int) -> int:\n    return a * b\n"}
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PROMPT = "def total(a, b):\n    return "


@pytest.fixture
def backend() -> str:  # decoding logic only: the embedded defaults are enough
    return "sqlite"


@pytest.fixture(scope="module")
def wordy_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny Llama that writes made-up words (its letters' embeddings lean one way, and every state leans along
    with them), and a hypernetwork checkpoint for it."""
    from hypernet.checkpoint import save_checkpoint
    from hypernet.generator import AdapterGenerator

    model, tok = tiny_llama(0), byte_tokenizer()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[:, 0] = 3.0
        for ch in "abcdefghijklmnopqrstuvwxyz_":
            emb[tok.convert_tokens_to_ids(ch), 0] = 4.0 + float(torch.rand(1, generator=g))
    path = tmp_path_factory.mktemp("wordy-model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    gen = AdapterGenerator.load(None, path)
    ckpt = tmp_path_factory.mktemp("wordy-ckpt") / "hypernet.safetensors"
    save_checkpoint(gen.hypernet, ckpt)
    return path, ckpt


@pytest.fixture
def served(client_for, wordy_model: tuple[Path, Path], tmp_path: Path):
    model_dir, ckpt = wordy_model
    client = client_for(engine="local", base_model_path=model_dir, hypernet_checkpoint=ckpt)
    make_git_repo(tmp_path / "calc", REPO)
    resp = client.post("/repos", json={"url": str(tmp_path / "calc"), "name": "calc"})
    assert wait_job(client, resp.json()["job"]["id"])["status"] == "succeeded"
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    return client, oai


def _words(text: str) -> list[str]:
    return WORD.findall(re.split(r"#|'|\"", text)[0])  # comments and strings are not constrained


def test_completions_keep_to_the_repository_names(served, tmp_path: Path) -> None:
    client, oai = served
    vocab_files = list((tmp_path / "data").rglob("vocabulary.json"))
    assert len(vocab_files) == 1
    names = set(json.loads(vocab_files[0].read_text()))
    assert {"add_numbers", "multiply_numbers", "return", "int"} <= names

    def complete(**extra) -> str:
        out = oai.completions.create(model="calc", prompt=PROMPT, max_tokens=24, temperature=0, extra_body=extra)
        return out.choices[0].text

    plain, default, kept = complete(repo_vocabulary=False), complete(), complete(repo_vocabulary=True)
    known = names | set(WORD.findall(PROMPT))
    invented = [w for w in _words(plain) if w not in known]
    assert invented, plain  # without it the model makes names up (so the check below can fail)
    words = _words(kept)
    assert words and all(w in known or (k == len(words) - 1 and any(n.startswith(w) for n in known))
                         for k, w in enumerate(words)), kept
    assert default == kept  # on by default (CODE2LORA_REPO_VOCABULARY)


def test_vocabulary_requests_that_cannot_be_served_are_400(served) -> None:
    _, oai = served
    with pytest.raises(openai.BadRequestError, match="base model has no repository"):
        oai.completions.create(model="base", prompt=PROMPT, max_tokens=4, extra_body={"repo_vocabulary": True})
    # base without asking: plain decoding, no error
    assert oai.completions.create(model="base", prompt=PROMPT, max_tokens=4).choices[0].text is not None


def test_the_setting_switches_it_off(client_for, wordy_model: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, ckpt = wordy_model
    client = client_for(engine="local", base_model_path=model_dir, hypernet_checkpoint=ckpt, repo_vocabulary=False)
    make_git_repo(tmp_path / "calc", REPO)
    resp = client.post("/repos", json={"url": str(tmp_path / "calc"), "name": "calc"})
    assert wait_job(client, resp.json()["job"]["id"])["status"] == "succeeded"
    oai = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    off = oai.completions.create(model="calc", prompt=PROMPT, max_tokens=24, temperature=0).choices[0].text
    on = oai.completions.create(model="calc", prompt=PROMPT, max_tokens=24, temperature=0,
                                extra_body={"repo_vocabulary": True}).choices[0].text
    assert off != on
