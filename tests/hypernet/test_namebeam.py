"""Whole-name beam: it writes the name that is most probable as a whole, where greedy takes the best first piece."""

from __future__ import annotations

import math

import torch

from hypernet.decoding import RepoVocabulary, TokenIndex
from hypernet.metrics import complete
from hypernet.namebeam import name_beam
from testkit.models import byte_tokenizer, tiny_llama

NAMES = ["pax", "qb", "x"]


class _Scripted(torch.nn.Module):
    """A tiny Llama (for its KV cache) whose next-token distribution is a fixed table keyed by the last token:
    after the prompt `x = `, `p` 0.6 / `q` 0.4; `pa` 0.2 (`pz` 0.8, not a name); `qb` 0.9; then a line break.
    Greedy under the mask writes `pax` (0.6 x 0.2 = 0.12); the whole name `qb` is 0.4 x 0.9 = 0.36."""

    def __init__(self, tok, first: dict[str, float] | None = None) -> None:
        super().__init__()
        self.inner = tiny_llama(seed=1).requires_grad_(False)
        tid = tok.convert_tokens_to_ids
        nl = tok("\n", add_special_tokens=False)["input_ids"][0]
        table = torch.full((258, 258), -30.0)
        script = {"Ġ": first or {"p": 0.6, "q": 0.4}, "p": {"a": 0.2, "z": 0.8}, "a": {"x": 1.0},
                  "q": {"b": 0.9, "z": 0.1}}
        for last, nxt in script.items():
            for ch, p in nxt.items():
                table[tid(last), tid(ch) if ch != "(" else tid("(")] = math.log(p)
        for last in ("x", "b", "z", "("):
            table[tid(last), nl] = 0.0
        table[nl, nl] = 0.0
        self.register_buffer("table", table)

    def forward(self, input_ids, **kw):
        out = self.inner(input_ids=input_ids, **kw)
        out.logits = out.logits * 0 + self.table[input_ids[:, -1]][:, None]
        return out


def _setup(first: dict[str, float] | None = None):
    tok = byte_tokenizer()
    model = _Scripted(tok, first)
    vocab = RepoVocabulary(TokenIndex.build(tok, 258), NAMES)
    return tok, model, vocab


def test_the_beam_writes_the_most_probable_whole_name_where_greedy_takes_the_best_first_piece() -> None:
    tok, model, vocab = _setup()
    prompt = tok("x = ", add_special_tokens=False)["input_ids"]
    greedy = complete(model, tok, [prompt], max_new_tokens=4, vocab=vocab)[0]
    beam = complete(model, tok, [prompt], max_new_tokens=4, vocab=vocab, name_beam=4)[0]
    assert greedy.startswith("pax"), greedy
    assert beam.startswith("qb\n"), beam
    head = name_beam(model, prompt, vocab.rows(["x = "]), width=4)
    assert head is not None and tok.decode(head) == "qb"
    # in a batch with left padding (a longer prompt beside it), and for a prompt whose completion is not a name
    longer = tok("value = x = ", add_special_tokens=False)["input_ids"]
    punct = tok("x = (", add_special_tokens=False)["input_ids"]
    batch = complete(model, tok, [prompt, longer, punct], max_new_tokens=4, vocab=vocab, name_beam=4)
    assert batch[0].startswith("qb\n") and batch[1].startswith("qb\n"), batch
    assert batch[2] == complete(model, tok, [punct], max_new_tokens=4, vocab=vocab)[0]


def test_a_beam_of_width_one_is_greedy_over_whole_names() -> None:
    tok, model, vocab = _setup()
    prompt = tok("x = ", add_special_tokens=False)["input_ids"]
    head = name_beam(model, prompt, vocab.rows(["x = "]), width=1)
    assert head is not None and tok.decode(head) == "pax"


def test_no_beam_where_the_completion_does_not_start_with_a_name() -> None:
    # the model wants "(" first: the beam stands aside and the completion is plain masked greedy
    tok, model, vocab = _setup(first={"(": 0.7, "p": 0.2, "q": 0.1})
    prompt = tok("x = ", add_special_tokens=False)["input_ids"]
    assert name_beam(model, prompt, vocab.rows(["x = "]), width=4) is None
    plain = complete(model, tok, [prompt], max_new_tokens=3, vocab=vocab)
    assert complete(model, tok, [prompt], max_new_tokens=3, vocab=vocab, name_beam=4) == plain
    assert plain[0].startswith("(")


def test_a_name_the_prompt_started_is_finished_as_the_best_whole_name() -> None:
    # cut inside a name: after "q" only "qb" is a known name
    tok, model, vocab = _setup()
    prompt = tok("x = q", add_special_tokens=False)["input_ids"]
    head = name_beam(model, prompt, vocab.rows(["x = q"]), width=4)
    assert head is not None and tok.decode(head) == "b"
