"""hypernet.metrics: identifier sets, cut points, greedy completion under LoRA, metrics, score_adapter."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from hypernet.metrics import (
    Cut,
    LineCase,
    MetricBudget,
    complete,
    identifier_cuts,
    identifier_metrics,
    is_specific_identifier,
    known_identifiers,
    line_cases,
    line_metrics,
    repo_cuts,
    repo_identifiers,
    score_adapter,
    score_arms,
    token_losses_on_text,
)
from tests.engines.tiny import make_model, make_tokenizer

torch.set_num_threads(1)

FILES = {
    "shop/stock.py": (
        "import os.path\nfrom collections import OrderedDict as ODict\n\n"
        "WAREHOUSE_LIMIT = 40\n\n\n"
        "class ShelfLabel:\n    def __init__(self, barcode_digits):\n        self.barcode_digits = barcode_digits\n\n"
        "def restock_shelf(shelf, amount):\n    \"\"\"Fill a shelf.\"\"\"\n    return shelf + amount\n"
    ),
    "shop/bins.py": (
        "from shop.stock import restock_shelf\n\n"
        "def warehouse_bin(count):\n    total = restock_shelf(count, 2)\n    return total * 3\n"
    ),
}
HELDOUT = {
    "shop/use.py": (
        "from shop.stock import ShelfLabel, restock_shelf\nfrom shop.bins import warehouse_bin\n\n\n"
        "def refill_all(shelves):\n    out = []\n    for shelf in shelves:\n"
        "        label = ShelfLabel(shelf)\n        out.append(restock_shelf(shelf, 4))\n"
        "    return out\n\n\n"
        "def sort_bins(values):\n    # warehouse_bin is not called here\n    result = sorted(values)\n"
        "    total = warehouse_bin(len(result))\n    return restock_shelf(total, 1) + warehouse_bin(2)\n"
    ),
    "shop/more.py": (
        "import os\n\n\ndef report(items):\n    lines = []\n    for item in items:\n"
        "        lines.append(str(item))\n    count = len(lines)\n    again = restock_shelf(count, 1)\n"
        "    return ShelfLabel(again), warehouse_bin(count)\n"
    ),
}


@pytest.fixture(scope="module")
def ctx():
    from hypernet.context import RepoContext, extract_bytes

    facts = {p: extract_bytes(p, t.encode()) for p, t in FILES.items()}
    return RepoContext.build(facts, {}, max_file_bytes=100_000, max_files=100)


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return make_model(len(tok)).requires_grad_(False)


def _adapter(model, seed: int, std: float = 0.5) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, mod in model.named_modules():
        if name.endswith(("q_proj", "v_proj", "down_proj")):
            out[name] = (torch.randn(4, mod.in_features, generator=g) * std,
                         torch.randn(mod.out_features, 4, generator=g) * std)
    return out


class FixedWidthTok:
    """Tokens of three characters each: most identifiers start inside a token."""

    eos_token_id = pad_token_id = None

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        offs = [(i, min(i + 3, len(text))) for i in range(0, len(text), 3)]
        self.text = text
        return {"input_ids": list(range(len(offs))), "offset_mapping": offs}

    def decode(self, ids, **_):
        return "".join(self.text[3 * i: 3 * i + 3] for i in ids)


# ---------------------------------------------------------------------- identifier sets


def test_known_and_repo_identifiers(ctx):
    known = known_identifiers(ctx)
    for name in ("restock_shelf", "ShelfLabel", "WAREHOUSE_LIMIT", "warehouse_bin", "barcode_digits",  # defined/param
                 "amount", "os", "path", "collections", "OrderedDict", "ODict", "stock", "shop",  # imports, modules
                 "len", "sorted", "startswith", "append", "items", "return", "self", "Optional"):  # builtins, attrs
        assert name in known, name
    assert "restock_shelves" not in known and "frobnicate" not in known
    repo = repo_identifiers(ctx)
    assert {"restock_shelf", "ShelfLabel", "warehouse_bin", "WAREHOUSE_LIMIT"} <= repo
    assert "__init__" not in repo and all(is_specific_identifier(n) for n in repo)


def test_corpus_uses_the_moved_helpers():
    import hypernet.metrics.text as text
    import training.data.corpus as corpus
    import training.eval.metrics as tm

    assert corpus.is_specific_identifier is text.is_specific_identifier and corpus._mark is text.mark_tokens
    assert tm.edit_similarity is text.edit_similarity and tm.exact_match is text.exact_match


# ---------------------------------------------------------------------- cut points


def test_boundary_cuts_end_right_before_the_identifier(tok):
    text = HELDOUT["shop/use.py"]
    idents = {"restock_shelf", "ShelfLabel", "warehouse_bin"}
    cuts = identifier_cuts("shop/use.py", text, tok, idents, n=20, seed=0, max_prefix_tokens=64)
    assert cuts
    for c in cuts:
        assert c.mode == "boundary" and c.partial == "" and c.target in idents
        m = re.search(re.escape(c.prefix_text) + r"\s*" + re.escape(c.target) + r"\b", text)
        assert m is not None, (c.prefix_text[-30:], c.target)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert any(ids[k: k + len(c.prefix_ids)] == c.prefix_ids for k in range(len(ids)))  # real token boundary
        line = text.splitlines()[c.line - 1]
        assert not line.lstrip().startswith("#") and f"def {c.target}" not in line
        assert c.in_prompt == bool(re.search(rf"\b{c.target}\b", c.prefix_text))
    assert {c.in_prompt for c in cuts} == {True, False}  # both kinds, marked
    assert cuts == identifier_cuts("shop/use.py", text, tok, idents, n=20, seed=0, max_prefix_tokens=64)


def test_definition_and_comment_lines_are_not_cut(tok):
    text = "x = 1\n" * 10 + "def restock_shelf(a):\n    return a\n# restock_shelf here\nrestock_shelf = 3\ny = restock_shelf(2)\n"
    cuts = identifier_cuts("a.py", text, tok, {"restock_shelf"}, n=10)
    assert [c.line for c in cuts] == [15]


def test_cuts_skip_identifiers_that_start_inside_a_token():
    text = "value = 0\n" * 3 + "".join(f"r = restock_shelf({i}) + 1\n" for i in range(12))
    ftok = FixedWidthTok()
    cuts = identifier_cuts("a.py", text, ftok, {"restock_shelf"}, n=50, max_prefix_tokens=1000)
    assert cuts
    for c in cuts:
        start = len(c.prefix_text)
        assert text.startswith(c.prefix_text) and start % 3 == 0
        assert text[start:].lstrip().startswith("restock_shelf")
    total = text.count("restock_shelf")
    assert len(cuts) < total  # some occurrences start mid-token and were skipped


def test_inside_cuts_continue_the_partial_identifier(tok):
    text = HELDOUT["shop/use.py"]
    cuts = identifier_cuts("shop/use.py", text, tok, {"restock_shelf", "ShelfLabel", "warehouse_bin"}, n=10,
                           mode="inside")
    assert cuts
    for c in cuts:
        assert c.mode == "inside" and c.partial and c.target.startswith(c.partial) and c.partial != c.target
        assert c.prefix_text.endswith(c.partial)
    with pytest.raises(ValueError):
        identifier_cuts("a.py", text, tok, {"x"}, n=1, mode="middle")


def test_repo_cuts_prefer_identifiers_absent_from_the_prompt(tok):
    cuts = repo_cuts(HELDOUT, tok, {"restock_shelf", "ShelfLabel", "warehouse_bin"}, n=4, seed=1,
                     max_prefix_tokens=200)
    assert len(cuts) == 4 and sum(not c.in_prompt for c in cuts) == 3
    assert repo_cuts(HELDOUT, tok, {"restock_shelf"}, n=0) == []


def test_line_cases_cut_at_line_starts(tok):
    text = HELDOUT["shop/use.py"]
    cases = line_cases("shop/use.py", text, tok, n=5, seed=0, max_prefix_tokens=40)
    assert cases
    for c in cases:
        assert c.target == text.splitlines()[c.line - 1].strip()
        assert re.search(re.escape(c.prefix_text) + r"\s*" + re.escape(c.target), text)
    assert cases == line_cases("shop/use.py", text, tok, n=5, seed=0, max_prefix_tokens=40)


# ---------------------------------------------------------------------- metrics on hand-made completions


def test_identifier_metrics_counts():
    known = {"restock_shelf", "ShelfLabel", "len", "count"}
    cuts = [Cut("a.py", [1], "x = ", "restock_shelf", False),
            Cut("a.py", [1], "x = ", "restock_shelf", True),
            Cut("a.py", [1], "x = ", "ShelfLabel", False),
            Cut("a.py", [1], "y = foo_bar\nx = ", "ShelfLabel", False),
            Cut("a.py", [1], "x = ", "restock_shelf", False),
            Cut("a.py", [1], "x = rest", "restock_shelf", False, "inside", "rest"),
            Cut("a.py", [1], "x = rest", "restock_shelf", True, "inside", "rest")]
    comps = [" restock_shelf(count)", "restock_shelves(1)", " ShelfLab()", "foo_bar + 1", "(1)", "ock_shelf(2)",
             "ore()"]
    m = identifier_metrics(cuts, comps, known)
    assert [r["em"] for r in m["records"]] == [1, 0, 0, 0, 0, 1, 0]
    # invented: restock_shelves, ShelfLab, restore; foo_bar is in the prompt; "(1)" produces no identifier
    assert [r["invented"] for r in m["records"]] == [0, 1, 1, 0, 0, 0, 1]
    assert m["ident_em"] == pytest.approx(2 / 7) and m["invented_rate"] == pytest.approx(3 / 7)
    assert m["n_in_prompt"] == 2 and m["ident_em_in_prompt"] == 0.0 and m["ident_em_not_in_prompt"] == 0.4
    assert m["records"][6]["predicted"] == "restore"
    assert identifier_metrics([], [], known)["ident_em"] is None


def test_line_metrics_generated():
    cases = [LineCase("a.py", [1], "", "return total * 3"), LineCase("a.py", [1], "", "x = 1")]
    m = line_metrics(cases, ["\n    return total * 3\n    more", "x = 2"])
    assert [r["em"] for r in m["records"]] == [1.0, 0.0]
    assert m["line_em"] == 0.5 and m["line_edit_sim"] == pytest.approx((1 + 0.8) / 2)


# ---------------------------------------------------------------------- generation and losses under LoRA


def test_complete_cache_padding_and_per_row_adapters(model, tok):
    prompts = [tok("def add(a, b):\n    return", add_special_tokens=False)["input_ids"],
               tok("import os", add_special_tokens=False)["input_ids"],
               tok("class Repo:\n    def __init__(self, url):\n", add_special_tokens=False)["input_ids"]]
    cached = complete(model, tok, prompts, max_new_tokens=6)
    assert cached == complete(model, tok, prompts, max_new_tokens=6, use_cache=False)
    assert cached == [complete(model, tok, [p], max_new_tokens=6)[0] for p in prompts]  # left padding is exact
    ad1, ad2 = _adapter(model, 1), _adapter(model, 2)
    with_ad = complete(model, tok, prompts, max_new_tokens=6, adapter=ad1, scaling=2.0)
    assert with_ad != cached  # the LoRA changes what is generated
    assert with_ad == complete(model, tok, prompts, max_new_tokens=6, adapter=ad1, scaling=2.0, use_cache=False)
    mixed = complete(model, tok, prompts, max_new_tokens=6, adapter=[ad1, None, ad2], scaling=[2.0, 1.0, 2.0])
    assert mixed[0] == with_ad[0] and mixed[1] == cached[1]
    assert mixed[2] == complete(model, tok, prompts[2:], max_new_tokens=6, adapter=ad2, scaling=2.0)[0]
    # the model is untouched afterwards
    assert complete(model, tok, prompts, max_new_tokens=6) == cached


def test_token_losses_change_with_a_lora(model, tok):
    texts = list(HELDOUT.values())
    idents = {"restock_shelf", "ShelfLabel", "warehouse_bin"}
    base = token_losses_on_text(model, tok, texts, idents, seq_len=48)
    assert base["tokens"] == 2 * 47 and base["ident_tokens"] > 0
    lora = token_losses_on_text(model, tok, texts, idents, adapter=_adapter(model, 1), scaling=2.0, seq_len=48)
    assert lora["loss"] != pytest.approx(base["loss"]) and lora["ident_loss"] != pytest.approx(base["ident_loss"])
    per_row = token_losses_on_text(model, tok, texts, idents, adapter=[None, None], seq_len=48)
    assert per_row["loss"] == pytest.approx(base["loss"], abs=1e-5)


def test_score_adapter_is_deterministic_and_sees_the_lora(model, tok, ctx):
    budget = MetricBudget(chunks=2, seq_len=48, cuts=4, cut_prefix_tokens=48, ident_new_tokens=4, lines=2,
                          line_prefix_tokens=32, line_new_tokens=8)
    ad = _adapter(model, 3)
    one = score_adapter(model, tok, HELDOUT, ctx, ad, 2.0, budget=budget)
    assert one == score_adapter(model, tok, HELDOUT, ctx, ad, 2.0, budget=budget)
    import json

    json.dumps(one, allow_nan=False)
    for key in ("loss", "ident_loss", "ident_em", "invented_rate", "line_em", "line_edit_sim"):
        assert one[key] is not None, key
    assert one["n_cuts"] == 4 and one["n_lines"] == 2 and one["n_chunks"] == 2
    base = score_adapter(model, tok, HELDOUT, ctx, None, budget=budget)
    assert base["loss"] != pytest.approx(one["loss"])
    arms = score_arms(model, tok, HELDOUT, ctx, {"base": (None, 1.0), "lora": (ad, 2.0)}, budget=budget,
                      records=True)
    assert arms["base"]["loss"] == pytest.approx(base["loss"], abs=1e-5)
    assert arms["lora"]["loss"] == pytest.approx(one["loss"], abs=1e-5)
    assert arms["lora"]["ident_em"] == one["ident_em"] and arms["base"]["ident_em"] == base["ident_em"]
    assert [r["target"] for r in arms["base"]["cut_records"]] == [r["target"] for r in arms["lora"]["cut_records"]]


@pytest.mark.skipif(not (Path.home() / ".cache/code2lora/models/SmolLM2-135M-Instruct").is_dir(),
                    reason="bundled model not prepared")
def test_bundled_tokenizer_cuts():
    from hypernet.basemodel import load_tokenizer

    tok = load_tokenizer()
    text = HELDOUT["shop/use.py"]
    for mode in ("boundary", "inside"):
        for c in identifier_cuts("shop/use.py", text, tok, {"restock_shelf", "warehouse_bin"}, n=10, mode=mode):
            tail = re.escape(c.target[len(c.partial):]) if mode == "inside" else r"\s*" + re.escape(c.target)
            assert re.search(re.escape(c.prefix_text) + tail, text), (mode, c.prefix_text[-20:], c.target)
