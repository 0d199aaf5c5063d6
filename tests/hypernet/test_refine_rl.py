"""The RL refinement (issue 18): the identifier reward, and a run on a tiny model that makes names up."""

from __future__ import annotations

import pytest
import torch

from hypernet.basemodel import find_targets
from hypernet.metrics import complete, identifier_metrics
from hypernet.refine import RefineConfig, refine_adapter
from hypernet.refine_rl import rl_prompts
from hypernet.rewards import group_advantages, identifier_reward, rollout_identifiers
from testkit.models import byte_tokenizer, tiny_llama

KNOWN = {"restock", "Shelf", "capacity", "items", "return", "self", "def", "class", "len", "min", "int", "if", "for",
         "in", "print", "amount", "shelf", "count", "total", "add", "full", "item", "None", "True", "False"}
REPO_IDENTS = {"restock", "Shelf", "capacity"}
BIAS = 2.0  # logit bonus of the letter z
FILES = {
    "shelf.py": "class Shelf:\n    def __init__(self, capacity):\n        self.capacity = capacity\n"
                "        self.items = []\n\n    def full(self):\n        return len(self.items) >= self.capacity\n\n"
                "    def add(self, item):\n        if not self.full():\n            self.items.append(item)\n",
    "stock.py": "from shelf import Shelf\n\n\ndef restock(shelf, amount):\n    for _ in range(amount):\n"
                "        shelf.add(1)\n    return shelf.capacity\n\n\ndef total(shelves):\n"
                "    return sum(restock(s, 1) for s in shelves)\n\n\ndef fill(shelf):\n"
                "    return restock(shelf, shelf.capacity)\n",
    "main.py": "from stock import restock\nfrom shelf import Shelf\n\n\ndef run():\n    shelf = Shelf(3)\n"
               "    restock(shelf, 2)\n    print(shelf.capacity)\n    other = Shelf(4)\n    restock(other, 1)\n"
               "    return restock(Shelf(5), 5)\n",
}


def test_rollout_identifiers_skip_comments_strings_and_bound_names() -> None:
    prompt = "import os\n\ndef f(x):\n    "
    comp = 'y = os.pathx(x, key=1)  # made up words here\n    return zork(y, "words in a string")\ndef g(a, b'
    used = [(u.name, u.binds, u.partial) for u in rollout_identifiers(prompt, comp)]
    assert used == [("y", True, False), ("os", False, False), ("pathx", False, False), ("x", False, False),
                    ("key", True, False), ("return", False, False), ("zork", False, False), ("y", False, False),
                    ("def", False, False), ("g", True, False), ("a", True, False), ("b", True, True)]
    assert not rollout_identifiers(prompt, comp, truncated=False)[-1].partial
    r = identifier_reward(prompt, comp, {"os", "return", "def"})
    # known: os, x (prompt), return, y (bound before), def; invented: pathx, zork
    assert (r.known, r.invented, r.names) == (5, 2, ("pathx", "zork"))
    assert r.reward == pytest.approx((5 - 2) / 7)
    assert identifier_reward("x = 1\n", "# only a comment\n", set()).reward == 0.0
    # a name cut short by the token limit: nothing while it can still become a known name, -1 once it cannot
    assert identifier_reward("x = ", "resto", {"restock"}).reward == 0.0
    assert identifier_reward("x = ", "restz", {"restock"}).invented == 1
    assert identifier_reward("x = ", "restz", {"restock"}, truncated=False).invented == 1
    assert identifier_reward("x = ", "resto", {"restock"}, truncated=False).invented == 1
    assert identifier_reward('s = """\n', 'zork inside a docstring """ + zork\n', set(), truncated=False).invented == 1


def test_group_advantages_are_relative_to_the_group() -> None:
    adv = group_advantages(torch.tensor([1.0, 0.0, 2.0, 2.0]), 2, scale=False)
    assert adv.tolist() == [0.5, -0.5, 0.0, 0.0]


def _biased_model() -> torch.nn.Module:
    """A random tiny Llama whose output layer favours `z` (greedy decoding writes the made-up name `zzzz...`) and,
    a little less, a few punctuation marks (sampling also writes rollouts without any name)."""
    model = tiny_llama(seed=3)
    tok = byte_tokenizer()
    head = torch.nn.Linear(64, 258, bias=True)
    head.weight = model.lm_head.weight
    bias = torch.zeros(258)
    bias[tok.convert_tokens_to_ids("z")] = BIAS
    for ch in "(),:":
        bias[tok.convert_tokens_to_ids(ch)] = BIAS - 0.3
    head.bias = torch.nn.Parameter(bias)
    model.lm_head = head
    return model.requires_grad_(False)


def _start(model: torch.nn.Module, rank: int = 4) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return {t.path: (0.1 * torch.randn(rank, t.in_features, generator=g), torch.zeros(t.out_features, rank))
            for t in find_targets(model)}


def _invented(model, tok, tensors, prompts) -> tuple[int, float]:
    texts = complete(model, tok, [p.cut.prefix_ids for p in prompts], max_new_tokens=16, adapter=tensors,
                     scaling=2.0)
    names = sum(identifier_reward(p.cut.prefix_text, t, KNOWN, truncated=False).invented
                for p, t in zip(prompts, texts, strict=True))
    return names, identifier_metrics([p.cut for p in prompts], texts, KNOWN)["invented_rate"]


@pytest.fixture
def one_thread():
    """The run is a few hundred tiny forwards: threads only add synchronisation on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_rl_refinement_changes_the_adapter_and_invents_fewer_names(one_thread) -> None:
    model, tok = _biased_model(), byte_tokenizer()
    start = _start(model)
    # the random model's cross-entropy on real text means nothing: the all-token loss guard is off here
    cfg = RefineConfig(method="rl", steps=30, max_seconds=600, lr=2e-2, kl_weight=0.05, rl_prompts=4, rl_group=4,
                       rl_new_tokens=6, rl_prompt_tokens=48, rl_sim_reward=0.0, eval_every=10, patience=10,
                       val_fraction=0.0, rl_loss_tolerance=10.0)
    prompts = rl_prompts(tok, FILES, REPO_IDENTS, n=64, prompt_tokens=48, new_tokens=16)
    assert len(prompts) >= 8
    before_names, before_rate = _invented(model, tok, start, prompts)
    assert before_names > 0 and before_rate > 0.5  # the model does make names up: the check below can fail
    seen = []
    result = refine_adapter(model, tok, start, 2.0, FILES, REPO_IDENTS, cfg, progress=lambda f, m: seen.append(m),
                            known=KNOWN)
    assert result.metrics["method"] == "rl" and result.steps >= 10 and seen
    assert any(not torch.equal(result.tensors[p][1], start[p][1]) for p in start)  # B moved off zero
    after_names, after_rate = _invented(model, tok, result.tensors, prompts)
    assert after_names < before_names
    assert after_rate <= before_rate
    assert result.metrics["val_best"]["reward"] > result.metrics["val_start"]["reward"]


def test_rl_needs_the_known_names_and_methods_are_checked() -> None:
    model, tok = _biased_model(), byte_tokenizer()
    with pytest.raises(ValueError, match="known identifiers"):
        refine_adapter(model, tok, _start(model), 2.0, FILES, REPO_IDENTS, RefineConfig(method="rl", steps=1))
    with pytest.raises(ValueError, match="supported: supervised, rl"):
        refine_adapter(model, tok, _start(model), 2.0, FILES, REPO_IDENTS, RefineConfig(method="dpo", steps=1))
