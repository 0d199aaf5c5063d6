"""Repository-vocabulary decoding: the masks it builds and what greedy completions under it produce."""

from __future__ import annotations

import math
import re

import pytest
import torch

from hypernet.decoding import RepoVocabulary, TokenIndex, vocab_arm_suffix
from hypernet.metrics import complete
from testkit.models import byte_tokenizer, tiny_llama

NAMES = ["restock_shelf", "restock", "ShelfLabel", "warehouse_bin", "self", "return", "def", "len", "x1"]
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def index(tok):
    return TokenIndex.build(tok, 258)


def _allowed(index: TokenIndex, vocab: RepoVocabulary, prompt: str) -> set[str] | None:
    mask = vocab.rows([prompt]).allowed(0)
    return None if mask is None else {index.pieces[i] for i in mask.nonzero().flatten().tolist()}


def test_a_partial_name_may_only_continue_towards_a_known_name(index):
    vocab = RepoVocabulary(index, NAMES)
    assert _allowed(index, vocab, "    n = restock_s") == {"h"}
    # a complete name may end (punctuation, whitespace) or go on to a longer name
    after = _allowed(index, vocab, "    n = restock")
    assert after is not None and {"_", "(", " ", "\n", "."} <= after and "s" not in after
    # at a word boundary a new word must start like some known name; numbers and punctuation are free
    start = _allowed(index, vocab, "    n = ")
    assert start is not None and {"r", "S", "w", "s", "1", "(", '"'} <= start and "q" not in start
    # digits inside a name are part of it
    assert _allowed(index, vocab, "y = x") == {"1"}


def test_prompt_words_are_names_but_not_the_word_being_written(index):
    vocab = RepoVocabulary(index, NAMES)
    allowed = _allowed(index, vocab, "counter = 0\nprint(coun")
    assert allowed == {"t"}  # `counter` is defined in the prompt
    assert _allowed(index, vocab, "x = restock_q") is None  # a new name the prompt started: left alone


def test_comments_and_strings_are_not_constrained(index):
    vocab = RepoVocabulary(index, NAMES)
    assert _allowed(index, vocab, "x = 1  # restock the sh") is None
    assert _allowed(index, vocab, "msg = 'restock the sh") is None
    assert _allowed(index, vocab, 'def f():\n    """Restock the sh') is None
    assert _allowed(index, vocab, 'def f():\n    """Doc."""\n    return rest') is not None
    # a window cut from the middle of a file may begin inside a docstring: code after its closing quotes is code
    assert _allowed(index, vocab, 'the docs end here.\n    """\n    with pytest.raises(rest') is not None
    assert _allowed(index, vocab, 'the docs end here.\n    """\n    x = rest') is not None
    # ... while prose after an opening triple quote stays free
    assert _allowed(index, vocab, 'def f():\n    """Restock the shelf.\n\n    Shelves are rest') is None


def test_a_finite_bias_penalises_instead_of_masking(index):
    logits = torch.zeros(2, 258)
    hard = RepoVocabulary(index, NAMES).rows(["a = restock_s", "# free text"]).apply(logits.clone())
    soft = RepoVocabulary(index, NAMES, bias=2.5).rows(["a = restock_s", "# free text"]).apply(logits.clone())
    h = index.pieces.index("h")
    assert hard[0, h] == 0 and torch.isinf(hard[0]).sum() == 257
    assert soft[0, h] == 0 and soft[0].min() == -2.5 and int((soft[0] == -2.5).sum()) == 257
    assert torch.equal(hard[1], logits[1]) and torch.equal(soft[1], logits[1])  # the comment row is untouched
    assert vocab_arm_suffix(math.inf) == "+vocab" and vocab_arm_suffix(2.5) == "+vocab2.5"


class _Wordy(torch.nn.Module):
    """A random tiny Llama plus a random table over letters, space, _ and . keyed by the last
    token and the position: it writes made-up words."""

    def __init__(self, tok) -> None:
        super().__init__()
        self.inner = tiny_llama(seed=3).requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        ids = [tok.convert_tokens_to_ids(ch if ch != " " else "Ġ") for ch in "abcdefghijklmnopqrstuvwxyz_ ."]
        table = torch.zeros(258, 258)
        table[:, ids] = 4.0 + 4.0 * torch.rand(258, len(ids), generator=g)
        self.register_buffer("table", table)

    def forward(self, input_ids, **kw):
        out = self.inner(input_ids=input_ids, **kw)
        # the bias follows the last token and the position: varied words, no fixed point
        key = (input_ids[:, -1] * 31 + kw["attention_mask"].sum(-1)) % 258
        out.logits = out.logits + self.table[key][:, None]
        return out


def test_greedy_completions_under_the_mask_write_only_known_names(tok):
    """A random model invents names; under the mask every name it writes is a known one (or, cut off by the
    token budget, the start of one)."""
    model = _Wordy(tok)
    prompts = ["def restock(x1):\n    ", "    value = ", "class A:\n    def f(self):\n        return "]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    vocab = RepoVocabulary(TokenIndex.build(tok, 258), NAMES)
    plain = complete(model, tok, ids, max_new_tokens=24)
    masked = complete(model, tok, ids, max_new_tokens=24, vocab=vocab)
    allowed = set(NAMES)

    def invented(prompt: str, text: str) -> list[str]:
        code = re.split(r"#|'|\"", text)[0]  # comments and strings are free; stop reading there
        words = WORD.findall(code)
        last_open = bool(re.search(r"[A-Za-z0-9_]$", code))
        known = allowed | set(WORD.findall(prompt))
        return [w for k, w in enumerate(words) if w not in known and not (
            last_open and k == len(words) - 1 and any(n.startswith(w) for n in known))]

    assert any(invented(p, t) for p, t in zip(prompts, plain, strict=True))  # the check can fail
    assert all(not invented(p, t) for p, t in zip(prompts, masked, strict=True)), masked
    assert masked != plain
