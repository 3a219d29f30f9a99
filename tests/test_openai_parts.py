"""The OpenAI server's parts without a server: serve's flags, request parsing, the answer text a job releases
(stop strings, incomplete characters), prefill groups, chat templates in `chat`."""

from __future__ import annotations

import dataclasses
import io

import pytest

from conftest import make_cfg, one_line_error
from NNDF.actions import chat
from NNDF.base.config import GenerationSettings
from NNDF.cli import parse_args
from NNDF.models.chat_template import TINY_CHAT_TEMPLATE, read_template
from NNDF.registry import get_family
from NNDF.serving.continuous import prefill_groups
from NNDF.serving.jobs import AnswerText, Job
from NNDF.serving.openai_protocol import ApiError, ServedModel, parse


# --------------------------------------------------------------------------- flags
def test_serve_defaults_to_the_openai_api_on_localhost(tmp_path):
    s = parse_args(["serve", "GPT2", "onnxrt", "--use-cache", "--working-dir", str(tmp_path)]).serve
    assert (s.api, s.host, s.port, s.max_queue, s.max_batch_size, s.max_prefill_tokens) == \
        ("openai", "127.0.0.1", 8000, 64, 16, 256)
    t = parse_args(["serve", "GPT2", "onnxrt", "--api", "triton", "--http-port", "9000"]).serve
    assert (t.api, t.http_port, t.grpc_port, t.metrics_port, t.max_queue_delay_ms) == ("triton", 9000, 8001, 8002, 5.0)


@pytest.mark.parametrize("flags,match", [
    (["--http-port", "9000"], "--http-port belongs to serve --api triton"),
    (["--max-queue-delay-ms", "5"], "--max-queue-delay-ms belongs to serve --api triton"),
    (["--api", "triton", "--port", "9000"], "--port belongs to serve --api openai"),
    (["--api", "triton", "--api-key", "k"], "--api-key belongs to serve --api openai"),
    (["--api", "triton", "--chat-template", "README.md"], "--chat-template applies to chat and serve --api openai"),
    (["--do-sample"], "--do-sample does not apply to serve --api openai"),
    (["--num-beams", "2"], "--num-beams does not apply to serve --api openai"),
    (["--max-queue", "0"], "--max-queue must be at least 1"),
    (["--port", "70000"], "--port must be within 1..65535"),
    (["--api", "grpc"], "invalid choice: 'grpc'"),
    (["--max-q", "3"], "unrecognized arguments: --max-q"),          # no abbreviations
    (["--max-queue-delay", "3"], "unrecognized arguments: --max-queue-delay"),
    (["--chat-template", "no/such/file.jinja"], "--chat-template no/such/file.jinja is not a file"),
    (["--served-model-name", " "], "--served-model-name is empty"),
])
def test_bad_serve_flags_are_one_line(capsys, flags, match):
    one_line_error(capsys, "serve", "GPT2", "onnxrt", "--use-cache", *flags, match=match)


def test_openai_on_trt_takes_one_to_max_batch_size_rows():
    trt = parse_args(["serve", "GPT2", "trt", "--use-cache", "--max-batch-size", "8"]).trt
    assert (trt.dynamic_batch, trt.min_dynamic_batch, trt.max_dynamic_batch) == (True, 1, 8)
    with pytest.raises(Exception, match="dynamic batch is 1..4"):
        parse_args(["serve", "GPT2", "trt", "--use-cache", "--max-batch-size", "8", "--dynamic-batch",
                    "--max-dynamic-batch", "4"])
    with pytest.raises(Exception, match="does not replay CUDA graphs"):
        parse_args(["serve", "GPT2", "trt", "--use-cache", "--use-cuda-graph"])


def test_chat_template_flag_belongs_to_chat_and_serve(capsys, tmp_path):
    one_line_error(capsys, "run", "GPT2", "--chat-template", "README.md", match="--chat-template is read by the chat")
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] }")
    with pytest.raises(Exception, match="not a valid Jinja template"):
        read_template(broken)


# --------------------------------------------------------------------------- requests
@pytest.fixture(scope="module")
def served(workdir):
    loaded = get_family("GPT2").load(make_cfg(workdir))
    return ServedModel("m", loaded.tokenizer, loaded.max_positions, loaded.config.vocab_size, True, None)


def test_request_defaults_are_openais(served):
    request = parse({"model": "m", "prompt": "The lighthouse keeper"}, served, chat=False)
    s = request.settings
    assert s.max_new_tokens == 16 and s.do_sample and s.temperature == 1.0 and s.top_k == 0 and s.top_p == 1.0
    greedy = parse({"model": "m", "prompt": [[1, 2], [3]], "temperature": 0, "seed": -5, "top_k": -1}, served, False)
    assert not greedy.settings.do_sample and greedy.prompts == [[1, 2], [3]] and greedy.settings.seed == 2 ** 64 - 5
    assert greedy.settings.top_k == 0
    near_end = parse({"model": "m", "prompt": [1] * 120}, served, False)
    assert near_end.settings.max_new_tokens == 8               # the rest of the 128 positions


@pytest.mark.parametrize("body,status,code", [
    ({"prompt": "x", "echo": "yes"}, 400, "invalid_type"),
    ({"prompt": "x", "logprobs": 21}, 400, "invalid_value"),
    ({"prompt": "x", "top_p": 0}, 400, "invalid_value"),
    ({"prompt": "x", "repetition_penalty": 0}, 400, "invalid_value"),
    ({"prompt": "x", "presence_penalty": 0.5}, 400, "unsupported"),
    ({"prompt": "x", "best_of": 3}, 400, "unsupported"),
    ({"prompt": ""}, 400, "invalid_value"),
    ({"prompt": []}, 400, "invalid_type"),
    ({"prompt": [True]}, 400, "invalid_type"),
    ({}, 400, "missing"),
])
def test_request_checks(served, body, status, code):
    with pytest.raises(ApiError) as e:
        parse({"model": "m", **body}, served, chat=False)
    assert (e.value.status, e.value.code) == (status, code)


def test_encoder_decoder_models_refuse_logprobs(served):
    seq2seq = dataclasses.replace(served, decoder_only=False)
    with pytest.raises(ApiError, match="decoder-only"):
        parse({"model": "m", "prompt": "x", "logprobs": 1}, seq2seq, False)
    assert parse({"model": "m", "prompt": "x", "max_tokens": 100}, seq2seq, False).settings.max_new_tokens == 100


# --------------------------------------------------------------------------- answer text
class Letters:
    """A tokenizer whose tokens are single characters; 0 and 1 are the two bytes of 'é' (UTF-8)."""

    def decode(self, ids, skip_special_tokens=True):
        data = b"".join(b"\xc3" if i == 0 else b"\xa9" if i == 1 else bytes([i]) for i in ids)
        return data.decode("utf-8", errors="replace")

    def __len__(self):
        return 256


def test_answer_text_holds_back_what_could_still_change():
    text = AnswerText(Letters(), ["STOP"])
    pieces = [text.add(t) for t in b"ab"] + [text.add(0), text.add(1)] + [text.add(t) for t in b"xST"]
    assert pieces == ["a", "b", "", "\u00e9", "x", "", ""]        # half a character, then a stop's start, held
    assert text.add(ord("Q")) == "STQ" and not text.stopped          # not a stop after all: released
    assert [text.add(t) for t in b"zSTO"] == ["z", "", "", ""]
    assert text.add(ord("P")) == "" and text.stopped and text.sent == "ab\u00e9xSTQz"   # cut before the stop
    assert text.finish() == ""


def test_answer_text_finish_releases_the_rest():
    text = AnswerText(Letters(), ["</s>"])
    assert [text.add(t) for t in b"hi<"] == ["h", "i", ""]
    assert text.finish() == "<" and text.sent == "hi<"


def test_prefill_groups_keep_padding_small():
    def job(n, echo=False):
        return Job([1] * n, GenerationSettings(), lambda e: None, logprobs=1 if echo else None, echo=echo)

    jobs = [job(100), job(10), job(90), job(12), job(50, echo=True)]
    groups = [[len(j.prompt) for j in g] for g in prefill_groups(jobs)]
    assert groups == [[10, 12], [90, 100], [50]]


# --------------------------------------------------------------------------- chat
def test_chat_formats_lines_with_the_template_and_prints_the_answer(workdir):
    import numpy as np

    from GPT2.frameworks import make_backend as gpt2_frameworks
    from LLAMA.onnxrt import make_backend

    cfg = parse_args(["chat", "LLAMA", "onnxrt", "--use-cache", "--variant", "llama-tiny", "--working-dir",
                      str(workdir.root), "--output-seq-len", "6"])
    loaded = get_family("LLAMA").load(cfg)
    assert loaded.tokenizer.chat_template == TINY_CHAT_TEMPLATE
    backend = make_backend(loaded, cfg, workdir)
    out = io.StringIO()
    turn, = chat.converse(cfg, loaded, [backend], stdin=io.StringIO("The lighthouse\nexit\n"), out=out)["turns"]
    assert turn["input"] == "The lighthouse" and turn["prompt"].endswith("<|assistant|>\n")
    assert turn["prompt"].startswith("<|user|>\nThe lighthouse")
    shown = out.getvalue().split("> ", 1)[1].split("\n")[0]
    assert shown == turn["outputs"]["onnxrt"]["output"] and "<|user|>" not in shown
    ids = loaded.tokenizer(turn["prompt"], add_special_tokens=False)["input_ids"]
    tokens = backend.generate(np.array([ids]), np.ones((1, len(ids)), np.int64), cfg.generation).tokens[0]
    assert turn["outputs"]["onnxrt"]["output"] == loaded.output_text("", tokens)

    # a model without a template continues each line as text, as chat always did
    plain = parse_args(["chat", "GPT2", "--working-dir", str(workdir.root), "--output-seq-len", "3"])
    gpt2 = get_family("GPT2").load(plain)
    turn, = chat.converse(plain, gpt2, [gpt2_frameworks(gpt2, plain)], stdin=io.StringIO("The lighthouse\n"),
                          out=io.StringIO())["turns"]
    assert "prompt" not in turn and turn["outputs"]["frameworks"]["output"].startswith("The lighthouse")


def test_a_port_in_use_is_one_line_before_the_model_loads(capsys, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        one_line_error(capsys, "serve", "GPT2", "onnxrt", "--use-cache", "--port", port, "--working-dir", tmp_path,
                       match=f"--port {port} on 127.0.0.1 is in use")
    assert not any(tmp_path.iterdir())      # nothing loaded or exported
