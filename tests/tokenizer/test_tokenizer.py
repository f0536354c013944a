"""The code tokenizer: exact round trips, literal special tokens, Hugging Face equality, bad input."""

import json
import random
import sys

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
    train_tokenizer(corpus, root / "tok", vocab_size=400, holdout_fraction=0.3, progress=False)
    return root / "tok"


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load(tok_dir)


def test_files_and_special_tokens(tok_dir, tok):
    assert {p.name for p in tok_dir.iterdir()} == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                                  "training.json"}
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
    from tokenizers import Regex, pre_tokenizers

    from codekiln.tokenizer.train import PRETOKENIZE_PATTERN

    split = pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated")
    pieces = [p for p, _ in split.pre_tokenize_str("    x = foo.bar(12345):\n        return self.x\n\n")]
    assert pieces[:4] == ["    ", "x", " =", " foo"]  # indentation alone; a word may carry one space
    assert ".bar" in pieces and "(" in pieces and " self" in pieces
    assert [p for p in pieces if p.isdigit()] == ["1", "2", "3", "4", "5"]  # digits split
    assert "):\n        " in pieces  # a newline ends punctuation and carries the next indentation
    assert pieces[-2:] == ["\n", "\n"]
    assert all(not any(c.isalpha() for c in p) for p in pieces if "\n" in p)  # never inside a word
    ids = tok.encode("        return 12345\n")
    assert [tok.decode([i]) for i in ids if tok.decode([i]).isdigit()] == ["1", "2", "3", "4", "5"]


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
    train_tokenizer(corpus, tmp_path / "again", vocab_size=400, holdout_fraction=0.3, progress=False)
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


def test_stats_against_references(tok_dir, tmp_path, capsys):
    from codekiln.tokenizer.stats import tokenizer_stats
    from codekiln.tokenizer.train import is_held_out

    corpus = write_corpus(tmp_path / "corpus")
    result = tokenizer_stats(tok_dir, corpus, ["cl100k_base", str(tok_dir)], max_bytes=10**9)
    names = list(result["tokenizers"])
    assert names == ["codekiln", "cl100k_base", str(tok_dir)]
    ours, again = result["tokenizers"]["codekiln"], result["tokenizers"][str(tok_dir)]
    assert ours["tokens"] == again["tokens"]  # the same tokenizer through the HF file: the same count
    held = [r for r in (f"r{i}" for i in range(7)) if is_held_out(r, 0.3, 0)]
    assert 0 < len(held) < 7
    assert result["documents"] == sum(1 for i in range(400) if f"r{i % 7}" in held)
    assert result["tokenizers"]["cl100k_base"]["bytes_per_token"] > 1
    # Training never saw a held-out repository.
    from codekiln.tokenizer.train import sample_texts
    seen = {t for batch in sample_texts(corpus, 10**9, {}, 0, 0.3) for t in batch}
    import pyarrow.parquet as pq2
    rows = pq2.read_table(corpus / "data").to_pylist()
    assert not seen & {r["content"] for r in rows if r["repo"] in held}
    assert main(["tokenizer", "stats", "--tokenizer", str(tok_dir), "--corpus", str(corpus), "--compare", "nope"]) == 2
    assert "--compare nope" in capsys.readouterr().err


def test_stats_without_the_compare_extra(tok_dir, tmp_path, capsys, monkeypatch):
    """tiktoken is the optional `compare` extra: stats work without it, --compare cl100k_base says how to add it."""
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # as if not installed: importing it raises ImportError
    corpus = write_corpus(tmp_path / "corpus", docs=60)
    assert main(["tokenizer", "stats", "--tokenizer", str(tok_dir), "--corpus", str(corpus)]) == 0
    capsys.readouterr()
    assert main(["tokenizer", "stats", "--tokenizer", str(tok_dir), "--corpus", str(corpus),
                 "--compare", "cl100k_base"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pip install 'codekiln[compare]'" in err


def _imported_tokenizer(directory, mapping):
    """A small byte-level BPE saved like an imported model's: its own special tokens and no FIM tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(["def f(x):\n    return x + 1\n"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<file_sep>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    directory.mkdir()
    t.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"codekiln": {"special_tokens": mapping}}))
    return directory


def test_imported_tokenizer_without_fim_tokens(tmp_path):
    from codekiln.infer.fim import fim_prompt

    directory = _imported_tokenizer(tmp_path / "tokenizer", {"<|endoftext|>": "<|im_end|>",
                                                              "<|file_sep|>": "<file_sep>"})
    t = load(directory)
    assert dict(t.special_ids) == {"<|endoftext|>": 2, "<|file_sep|>": 3}
    assert t.eot_id == 2 and t.eot_token == "<|im_end|>" and t.imported and not t.has_fim
    assert t.decode([t.eot_id]) == "<|im_end|>"
    text = "x = '<|im_end|>'\n"
    assert t.eot_id not in t.encode(text) and t.decode(t.encode(text)) == text
    # A FIM prompt is refused in one line naming the model, not built from missing ids.
    with pytest.raises(UserError, match=rf"tokenizer \({tmp_path}\) has no <\|fim_prefix\|> token: .* cannot fill in"):
        fim_prompt(t, "def f(", "):\n")
    with pytest.raises(KeyError):
        t.special_ids["<|not_a_codekiln_name|>"]  # a programming error stays one
    with pytest.raises(UserError, match="lacks the special token <fim_prefix>"):
        load(_imported_tokenizer(tmp_path / "bad", {"<|endoftext|>": "<|im_end|>", "<|fim_prefix|>": "<fim_prefix>"}))


def test_codekiln_tokenizers_still_need_every_special_token(tmp_path, tok_dir):
    spec = json.loads((tok_dir / "tokenizer.json").read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "<|fim_middle|>"]
    del spec["model"]["vocab"]["<|fim_middle|>"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="lacks the special token <\\|fim_middle\\|>"):
        load(tmp_path)
    assert load(tok_dir).has_fim and not load(tok_dir).imported


def test_llama_cpp_compatible_pretokenizer(tmp_path, tok_dir):
    from tokenizers import Regex, pre_tokenizers

    from codekiln.tokenizer.train import LLAMA_CPP_PATTERN

    corpus = write_corpus(tmp_path / "corpus", docs=150)
    train_tokenizer(corpus, tmp_path / "llama", vocab_size=400, progress=False, pretokenizer="llama-cpp-compatible")
    spec = json.loads((tmp_path / "llama" / "tokenizer.json").read_text())
    # llama.cpp's "qwen2" split, recorded where `codekiln export gguf` reads it, and in training.json.
    assert spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == LLAMA_CPP_PATTERN
    assert json.loads((tmp_path / "llama" / "training.json").read_text())["pretokenizer"] == "llama-cpp-compatible"
    assert json.loads((tok_dir / "training.json").read_text())["pretokenizer"] == "codekiln"
    split = pre_tokenizers.Split(Regex(LLAMA_CPP_PATTERN), behavior="isolated")
    pieces = [p for p, _ in split.pre_tokenize_str("    x = foo_bar(123):\n        return x\n")]
    assert pieces[:5] == ["   ", " x", " =", " foo", "_bar"]  # qwen2's split: `_` is not a letter, spaces lead
    assert [p for p in pieces if p.isdigit()] == ["1", "2", "3"]
    t = load(tmp_path / "llama")
    text = "def name_3(items):\r\n\treturn '<|endoftext|>' + 'caf\u00e9 🙂'  # it's\n"
    ids = t.encode(text)
    assert t.decode(ids) == text and t.eot_id not in ids
    with pytest.raises(UserError, match="unknown pretokenizer 'gpt4' \\(codekiln or llama-cpp-compatible\\)"):
        train_tokenizer(corpus, tmp_path / "bad", vocab_size=400, progress=False, pretokenizer="gpt4")
