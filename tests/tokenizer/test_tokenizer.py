"""The code tokenizer: exact round trips, literal special tokens, Hugging Face equality, bad input."""

import json
import random

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codekiln.cli import main
from codekiln.data.document import DOCUMENT_SCHEMA
from codekiln.errors import UserError
from codekiln.tokenizer import SPECIAL_TOKENS, load
from codekiln.tokenizer.train import train_tokenizer

_SNIPPETS = [
    "def {n}(items, limit={k}):\n    total = 0\n    for item in items:\n        if item > limit:\n            total += item\n    return total\n",
    "function {n}(a, b) {{\n  const x = a * {k};\n  return x + b;\n}}\n",
    "fn {n}(v: &[u32]) -> u32 {{\n    v.iter().map(|x| x * {k}).sum()\n}}\n",
    "# {n}\n\nSome *markdown* text about caf\u00e9s and na\u00efve r\u00e9sum\u00e9s, {k} times.\n",
    "class {n}:\n\t\"\"\"Tabs\tand CRLF.\"\"\"\r\n\tvalue = {k}\r\n",
]


def write_corpus(directory, docs: int = 400, seed: int = 0):
    """A corpus directory with one data part of generated multi-language documents."""
    rng = random.Random(seed)
    rows = []
    for i in range(docs):
        text = "".join(rng.choice(_SNIPPETS).format(n=f"name_{rng.randint(0, 50)}", k=rng.randint(0, 999))
                       for _ in range(rng.randint(2, 6)))
        rows.append({"id": f"{i:032x}", "content": text, "path": f"f{i}.py", "repo": f"r{i % 7}", "lang": "Python",
                     "license": "MIT", "source": "test", "bytes": len(text.encode()), "stars": None,
                     "cluster_id": f"{i:032x}"})
    (directory / "data").mkdir(parents=True)
    pq.write_table(__import__("pyarrow").Table.from_pylist(rows, schema=DOCUMENT_SCHEMA),
                   directory / "data" / "part-00000.parquet")
    return directory


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    corpus = write_corpus(root / "corpus")
    train_tokenizer(corpus, root / "tok", vocab_size=400, progress=False)
    return root / "tok"


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load(tok_dir)


def test_files_and_special_tokens(tok_dir, tok):
    assert {p.name for p in tok_dir.iterdir()} == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    assert tok.vocab_size == 400
    assert set(tok.special_ids) == set(SPECIAL_TOKENS)
    assert sorted(tok.special_ids.values()) == list(range(len(SPECIAL_TOKENS)))
    for name, tid in tok.special_ids.items():
        assert tok.decode([tid]) == name


def test_special_strings_are_literal_text(tok):
    text = "x = '<|endoftext|>' + '<|fim_prefix|><|fim_middle|>'\n"
    ids = tok.encode(text)
    assert not set(ids) & set(tok.special_ids.values())
    assert tok.decode(ids) == text


def test_code_aware_pretokenization(tok):
    pieces = [tok.decode([i]) for i in tok.encode("        return 12345\n\n")]
    assert pieces[0] == "        "  # indentation is one token of its own
    assert [p for p in pieces if p.strip().isdigit()] == ["1", "2", "3", "4", "5"]  # digits split
    assert all("\n" not in p or p.strip("\n") == "" for p in pieces)  # newlines never inside a word
    assert pieces[-2:] == ["\n", "\n"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
       | st.lists(st.sampled_from(list(SPECIAL_TOKENS) + ["\r\n", "\t", " ", "\x00", "\u200b", "é", "🙂", "<|", "|>"]),
                  max_size=40).map("".join))
def test_round_trip_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_round_trip_long_lines_and_control_characters(tok):
    text = "a" * 20000 + "\n" + "".join(chr(c) for c in range(32)) + " \t \r\n  trailing   \n"
    assert tok.decode(tok.encode(text)) == text


def test_transformers_gives_the_same_ids(tok_dir, tok):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tok_dir))
    for text in ["def f(x):\n    return x\n", "const a = 1;\r\n\tb = 'caf\u00e9'", "  12  34 🙂"]:
        assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
        assert hf.decode(tok.encode(text)) == text
    # The ecosystem's default: special-token strings in a prompt are matched.
    assert hf("<|fim_prefix|>", add_special_tokens=False)["input_ids"] == [tok.special_ids["<|fim_prefix|>"]]
    assert hf.eos_token == "<|endoftext|>"


def test_training_is_deterministic(tmp_path, tok_dir):
    corpus = write_corpus(tmp_path / "corpus")
    train_tokenizer(corpus, tmp_path / "again", vocab_size=400, progress=False)
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


def test_unigram(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", docs=150)
    train_tokenizer(corpus, tmp_path / "uni", vocab_size=500, algorithm="unigram", progress=False)
    t = load(tmp_path / "uni")
    text = "def name_3(items):\r\n\treturn '<|endoftext|>' + 'caf\u00e9 🙂'\n"
    ids = t.encode(text)
    assert t.decode(ids) == text and t.eot_id not in ids
    assert json.loads((tmp_path / "uni" / "tokenizer.json").read_text())["model"]["type"] == "Unigram"


def test_bad_input(tmp_path, capsys):
    with pytest.raises(UserError, match="not a corpus directory"):
        train_tokenizer(tmp_path, tmp_path / "t")
    corpus = write_corpus(tmp_path / "c", docs=20)
    with pytest.raises(UserError, match="smaller than the byte alphabet"):
        train_tokenizer(corpus, tmp_path / "t", vocab_size=200)
    empty = tmp_path / "empty"
    (empty / "data").mkdir(parents=True)
    pq.write_table(DOCUMENT_SCHEMA.empty_table(), empty / "data" / "part-00000.parquet")
    assert main(["tokenizer", "train", "--corpus", str(empty), "--out", str(tmp_path / "t"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"codekiln: error: {empty} has no documents to train on (empty corpus or all weights 0)"
    with pytest.raises(UserError, match="no tokenizer.json"):
        load(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="cannot write to --out"):
        train_tokenizer(corpus, tmp_path / "afile" / "tok", vocab_size=300)
