"""Tests for the parse check (stage 5): Python via ast, TOML via tomllib, the rest via tree-sitter."""

from __future__ import annotations

import multiprocessing
import sys
import textwrap
import threading
import time
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codekiln.data import parse_check
from codekiln.data.parse_check import available_parsers, parse_ok

ENABLED = ["C#", "Go", "Haskell", "JSX", "Java", "JavaScript", "Lua", "PHP", "Python", "Ruby", "Rust", "Scala",
           "Swift", "TOML", "TSX", "TypeScript", "YAML"]

# (language, valid snippet, broken snippet): realistic code, and an obvious breakage of it.
CASES: list[tuple[str, str, str]] = [
    ("JavaScript",
     "import fs from 'fs';\nexport async function load(p) {\n"
     "  const { a = 1, ...rest } = JSON.parse(await fs.promises.readFile(p));\n"
     "  return rest?.items?.map((x) => x ** 2) ?? [];\n}\n"
     "class A { #x = 1; static { A.y = 2; } get x() { return this.#x; } }\n",
     "function load(p) {\n  const x = ;\n  return x\n"),
    ("JSX",
     "export default function App({ items }) {\n  return (\n    <ul className=\"list\">\n"
     "      {items.map((i) => <li key={i}>{i}</li>)}\n    </ul>\n  );\n}\n",
     "export default function App() {\n  return <ul><li>one</ul>;\n}\n"),
    ("TypeScript",
     "interface User { id: number; name?: string }\ntype Keys = keyof User;\n"
     "export class Repo<T extends { id: number }> {\n  private items = new Map<number, T>();\n"
     "  add(item: T): this { this.items.set(item.id, item); return this; }\n}\n"
     "const u = { id: 1 } satisfies User;\nenum Color { Red = 'red' }\n",
     "interface User { id: number; name?: string\nexport class Repo<T { }\n"),
    ("TSX",
     "import React from 'react';\ninterface Props { title: string }\n"
     "export const Card: React.FC<Props> = ({ title }) => <div className=\"card\"><h2>{title}</h2></div>;\n"
     "const id = <T,>(x: T): T => x;\n",
     "export const Card = ({ title }: Props) => <div><h2>{title}</div>;\n"),
    ("Java",
     "package a.b;\nimport java.util.*;\npublic class Svc {\n  public record P(int x, int y) {}\n"
     "  static double area(Object o) {\n    return switch (o) { case P p -> p.x() * p.y(); default -> 0; };\n  }\n"
     "  public List<String> names(Map<String, List<Integer>> m) {\n"
     "    return m.keySet().stream().filter(k -> !k.isEmpty()).sorted().toList();\n  }\n}\n",
     "public class Svc {\n  void f() {\n    int x = ;\n  }\n"),
    ("Go",
     "package main\n\nimport \"fmt\"\n\ntype Store[K comparable, V any] struct{ m map[K]V }\n\n"
     "func (s *Store[K, V]) Get(k K) (V, bool) {\n\tv, ok := s.m[k]\n\treturn v, ok\n}\n\n"
     "func main() {\n\tfor i := range 3 {\n\t\tfmt.Println(i)\n\t}\n}\n",
     "package main\n\nfunc main() {\n\tx := := 1\n"),
    ("Rust",
     "use std::collections::HashMap;\n#[derive(Debug)]\nenum Tok<'a> { Id(&'a str), Num(f64) }\n"
     "fn count(s: &str) -> HashMap<&str, usize> {\n    let mut m = HashMap::new();\n"
     "    for w in s.split_whitespace() { *m.entry(w).or_insert(0) += 1; }\n    m\n}\n"
     "fn main() { let Some(x) = Some(1) else { return }; println!(\"{x:?}\"); }\n",
     "fn main() {\n    let x = ;\n    println!(\"{}\", x\n"),
    ("C#",
     "using System;\nnamespace N;\npublic record Person(string Name, int Age);\npublic sealed class S {\n"
     "    public int Count { get; private set; }\n"
     "    public string Describe(Person? p) =>\n"
     "        p switch { null => \"none\", { Age: < 18 } => \"minor\", _ => p.Name };\n}\n",
     "public class S {\n    public void F( {\n        var x = ;\n    }\n"),
    ("Ruby",
     "# frozen_string_literal: true\nmodule Shop\n  class Cart\n    include Enumerable\n"
     "    def initialize = @items = []\n    def each(&) = @items.each(&)\n    def total\n      sum(&:price)\n"
     "    rescue StandardError => e\n      warn e.message\n    end\n  end\nend\n"
     "puts <<~TXT\n  Total: #{Shop::Cart.new.count}\nTXT\n",
     "class Cart\n  def total\n    sum(&:price\n  end\n"),
    ("PHP",
     "<?php\ndeclare(strict_types=1);\nnamespace App;\nenum Status: string { case On = 'on'; }\n"
     "final class C {\n    public function __construct(private readonly array $xs) {}\n"
     "    public function names(): array { return array_map(fn($x) => $x->name, $this->xs); }\n}\n"
     "?>\n<ul><?php foreach ([1, 2] as $i): ?><li><?= $i ?></li><?php endforeach; ?></ul>\n",
     "<?php\nfunction f( {\n    $x = ;\n}\n"),
    ("Scala",
     "package demo\nsealed trait Shape\ncase class Circle(r: Double) extends Shape\n"
     "object Main {\n  def area(s: Shape): Double = s match {\n    case Circle(r) if r > 0 => math.Pi * r * r\n"
     "    case _ => 0.0\n  }\n  def main(args: Array[String]): Unit =\n"
     "    for (x <- 1 to 3 if x % 2 == 1) println(s\"$x ${area(Circle(x))}\")\n}\n",
     "object Main {\n  def f(x: Int = {\n    val y = \n"),
    ("Lua",
     "local M = {}\nM.__index = M\nfunction M.new(name)\n  return setmetatable({ name = name, items = {} }, M)\nend\n"
     "function M:add(x)\n  table.insert(self.items, x)\n  return #self.items\nend\n"
     "for i, v in ipairs({ 1, 2 }) do print(i, v // 2) end\nreturn M\n",
     "function M.new(name)\n  return { name = name\nend\nif x then\n"),
    ("Swift",
     "import Foundation\n\nstruct Point: Hashable { var x, y: Int }\n\n"
     "final class Client {\n    func fetch(_ s: String) async throws -> Data {\n"
     "        guard let url = URL(string: s) else { throw URLError(.badURL) }\n"
     "        let (data, _) = try await URLSession.shared.data(from: url)\n        return data\n    }\n}\n"
     "let doubled = [1, 2, 3].map { $0 * 2 }\n",
     "struct Point {\n    var x: Int =\n    func f( {\n"),
    ("Haskell",
     "{-# LANGUAGE LambdaCase #-}\nmodule Main (main) where\n\nimport qualified Data.Map.Strict as Map\n\n"
     "data Tree a = Leaf | Node (Tree a) a (Tree a) deriving (Show, Eq)\n\n"
     "insert :: Ord a => a -> Tree a -> Tree a\ninsert x Leaf = Node Leaf x Leaf\n"
     "insert x t@(Node l v r)\n  | x < v = Node (insert x l) v r\n  | otherwise = t\n\n"
     "main :: IO ()\nmain = do\n  let m = Map.fromList [(1 :: Int, \"a\")]\n  mapM_ print (Map.toList m)\n",
     "module Main where\nmain = do\n  let x = (1 +\n  print [1, 2\n"),
    ("YAML",
     "version: '3.9'\nservices:\n  web:\n    image: nginx:1.25\n    ports: ['80:80']\n"
     "    environment:\n      - KEY=value\nbase: &base\n  a: 1\nderived:\n  <<: *base\n"
     "script: |\n  echo hi\n---\nsecond: doc\n",
     "services:\n  web:\n    image: [nginx\n   ports: 1\n"),
    ("TOML",
     "[package]\nname = \"demo\"\nversion = \"0.1.0\"\n\n"
     "[dependencies]\nserde = { version = \"1\", features = [\"derive\"] }\n\n"
     "[[bin]]\nname = \"x\"\ndate = 1979-05-27T07:32:00Z\n",
     "[package\nname = \"demo\"\nname = \"dup\"\n"),
]


@pytest.mark.parametrize(("lang", "valid", "broken"), CASES, ids=[c[0] for c in CASES])
def test_valid_parses_and_broken_does_not(lang: str, valid: str, broken: str) -> None:
    assert parse_ok(valid, lang) is True
    assert parse_ok(broken, lang) is False


def test_every_enabled_language_has_a_case() -> None:
    assert {c[0] for c in CASES} | {"Python"} == set(ENABLED)


def test_available_parsers() -> None:
    got = available_parsers()
    assert got == sorted(got)
    assert got == ENABLED


@pytest.mark.parametrize(
    "lang",
    ["C", "C++", "CSS", "Shell", "Kotlin", "HTML", "JSON", "Markdown", "reStructuredText", "SQL", "Vue",
     "Jupyter Notebook", "Dockerfile", "Makefile", "R", "Perl", "Brainfuck"],
)
def test_languages_without_a_trusted_parser_give_none(lang: str) -> None:
    assert parse_ok("int main( {{{ garbage", lang) is None
    assert lang not in available_parsers()


def test_no_language_gives_none() -> None:
    assert parse_ok("x = 1\n", None) is None


def test_language_names_are_case_insensitive() -> None:
    assert parse_ok("x = 1\n", "python") is True
    assert parse_ok("let x = ;", "javascript") is False


# --- Python ---------------------------------------------------------------------------------


def test_python_valid_module() -> None:
    src = textwrap.dedent('''\
        from dataclasses import dataclass

        @dataclass
        class P:
            x: int = 0

            def norm(self) -> float:
                return abs(self.x)

        async def main(xs: list[int]) -> None:
            async with lock:
                print(f"{sum(xs)=}", *[x for x in xs if (y := x) > 1])
        ''')
    assert parse_ok(src, "Python") is True


def test_python2_print_statement_is_false() -> None:
    assert parse_ok('print "hello"\n', "Python") is False
    assert parse_ok("except Exception, e:\n    pass\n", "Python") is False


def test_python310_match_statement_is_true() -> None:
    src = ("match cmd:\n    case ['go', direction]:\n        move(direction)\n"
           "    case {'x': x, **rest}:\n        pass\n    case _:\n        pass\n")
    assert parse_ok(src, "Python") is True


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="type aliases are valid from 3.12 on")
def test_python_syntax_newer_than_interpreter_is_false() -> None:
    assert parse_ok("type Vector = list[float]\n", "Python") is False


def test_python_nul_byte_is_false() -> None:
    assert parse_ok("x = 1\x00\n", "Python") is False


def test_python_pathological_nesting_is_false_not_a_crash() -> None:
    assert parse_ok("x = " + "(" * 5000 + "1" + ")" * 5000 + "\n", "Python") is False
    assert parse_ok("x = " + "-" * 200_000 + "1\n", "Python") is False


def test_python_warnings_are_silenced_even_under_error_filter() -> None:
    src = 'path = "C:\\dir\\new"\nassert (x, "msg")\n'  # invalid escape, always-true assert
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_ok(src, "Python") is True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_ok(src, "Python")
    assert caught == []


# --- YAML / TOML ------------------------------------------------------------------------------


def test_templated_yaml_is_not_checked() -> None:
    helm = ("apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-svc\n"
            "{{- if .Values.x }}\nspec: {}\n{{- end }}\n")
    assert parse_ok(helm, "YAML") is None
    assert parse_ok("- name: x\n  when: {% if a %}\n", "YAML") is None


def test_github_actions_expressions_in_plain_scalars_parse() -> None:
    src = "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${GITHUB_SHA}\n"
    assert parse_ok(src, "YAML") is True


def test_toml_duplicate_key_is_false() -> None:
    assert parse_ok('a = 1\na = 2\n', "TOML") is False
    assert parse_ok('a = 1\nb = "x"\n', "TOML") is True


# --- tree-sitter guards -----------------------------------------------------------------------


def test_nul_character_is_false_for_tree_sitter_languages() -> None:
    assert parse_ok("var x = 1;\x00 )))(((", "JavaScript") is False
    assert parse_ok("var x = 1;\x00", "JavaScript") is False


def test_deep_nesting_is_false_without_parsing() -> None:
    deep = "x = " + "[" * 20_000 + "]" * 20_000 + ";"
    started = time.monotonic()
    assert parse_ok(deep, "JavaScript") is False
    assert time.monotonic() - started < 2
    # Many brackets but shallow: parsed normally.
    flat = "x = [" + "[1], " * 12_000 + "];"
    assert parse_ok(flat, "JavaScript") is True


@pytest.mark.parametrize("lang", ["Java", "C#"])
def test_angle_bracket_chain_is_false_without_exploding(lang: str) -> None:
    body = "class A { void f() { x = " + "a<b<c<" * 2000 + "; } }"
    started = time.monotonic()
    assert parse_ok(body, lang) is False
    assert time.monotonic() - started < 2


def test_generic_heavy_java_still_parses() -> None:
    decl = "  Map<String, List<Set<Integer>>> f{i} = new HashMap<>();\n"
    src = "import java.util.*;\nclass G {\n" + "".join(decl.format(i=i) for i in range(300)) + "}\n"
    assert src.count("<") > 256
    assert parse_ok(src, "Java") is True


def test_timeout_gives_false_and_parser_is_reusable() -> None:
    valid = "puts 1\n" * 20_000
    assert parse_ok(valid, "Ruby") is True
    assert parse_ok(valid, "Ruby", timeout_s=0.0) is False  # out of time: treated as unparsable
    # A cancelled tree-sitter parser resumes the old parse unless it is reset.
    assert parse_ok("puts 1\n", "Ruby") is True
    assert parse_ok("def f\n", "Ruby") is False


def test_early_abort_on_error_then_reuse() -> None:
    assert parse_ok("}}}} var var var " * 1000, "JavaScript") is False
    assert parse_ok("let ok = 1;\n", "JavaScript") is True


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["let", "x", "=", "1", ";", "(", ")", "{", "}", "[", "]", ",", "=>", "+", "'s'",
                                 "if", "else", "\n", " ", "function", "return", ".", "?", ":"]), max_size=40))
def test_early_abort_agrees_with_a_full_parse(tokens: list[str]) -> None:
    import tree_sitter
    import tree_sitter_javascript

    src = " ".join(tokens)
    full = tree_sitter.Parser(tree_sitter.Language(tree_sitter_javascript.language())).parse(src.encode())
    assert parse_ok(src, "JavaScript") is (not full.root_node.has_error)


def test_missing_grammar_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(parse_check._GRAMMARS, "Java", ("no_such_grammar_module", "language"))
    parse_check._clear_caches()
    try:
        assert parse_ok("class A {}", "Java") is None
        assert "Java" not in available_parsers()
    finally:
        monkeypatch.undo()
        parse_check._clear_caches()
    assert parse_ok("class A {}", "Java") is True


def test_threads_get_their_own_parsers() -> None:
    results: list[bool | None] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for _ in range(20):
            good = parse_ok(f"let a{i} = {i};\n" * 50, "JavaScript")
            bad = parse_ok(f"let a{i} = ;\n" * 50, "JavaScript")
            with lock:
                results.extend([good, not bad])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 160


def _child_parse(queue: multiprocessing.Queue) -> None:
    queue.put((parse_ok("fn main() {}", "Rust"), parse_ok("fn main( {", "Rust"), parse_ok("x = 1", "Python")))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_works_in_forked_worker_after_parent_used_it() -> None:
    assert parse_ok("fn main() {}", "Rust") is True  # parent creates and caches a parser
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_parse, args=(queue,))
    proc.start()
    result = queue.get(timeout=30)
    proc.join(timeout=30)
    assert proc.exitcode == 0
    assert result == (True, False, True)
