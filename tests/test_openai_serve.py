"""`run.py serve --api openai` as a real server process (127.0.0.1, free ports, always stopped), driven by the
official `openai` client and by raw HTTP where the client hides what is checked (status codes, SSE lines,
headers). Three servers: tiny GPT2 on onnxrt with 4 rows (answers, streams, logprobs, errors, metrics,
a client that goes away, the README's examples); a one-row GPT2 server with an API key, a queue of 1, a
small body limit and a --chat-template file (401, 413, 503, chat from a file, SIGTERM draining); and
tiny Llama, whose tokenizer ships a chat template."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest

from conftest import ROOT, concurrently, make_cfg
from NNDF.models.chat_template import TINY_CHAT_TEMPLATE
from NNDF.registry import get_family
from NNDF.runtime.generation import log_softmax
from NNDF.serving.child_server import HOST, OpenAIServer

KEY = "sk-test-key"
PROMPTS = ["The lighthouse keeper", "Clara baked bread every morning for the whole village", "Ben",
           "A storm rolled in over the harbour and the boats", "Tom", "In the morning the fishermen"]
MAX_TOKENS = [12, 30, 5, 40, 22, 17]


@pytest.fixture(scope="module")
def server(workdir, tmp_path_factory):
    log = tmp_path_factory.mktemp("openai") / "server.log"
    proc = OpenAIServer(("GPT2", "onnxrt", "--use-cache"), str(workdir.root), log, "--max-batch-size", "4")
    try:
        proc.wait_healthy()
        yield proc
    finally:
        assert proc.terminate() == 0, proc.output()[-2000:]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="not-checked", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def gpt2(workdir):
    return get_family("GPT2").load(make_cfg(workdir))


def post(url: str, body, headers: dict | None = None, raw: bytes | None = None) -> tuple[int, dict, object]:
    """(status, JSON body, headers) of a POST, whatever the status."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def complete(client, prompt, max_tokens, **extra):
    return client.completions.create(model="gpt2-tiny", prompt=prompt, max_tokens=max_tokens, **extra)


def staggered(jobs: list, gap_s: float = 0.03) -> list:
    """Run each job (a callable) on its own thread, started `gap_s` apart; their results in order."""
    return concurrently(jobs, gap_s)


def metric(server, name: str) -> float:
    with urllib.request.urlopen(f"http://{HOST}:{server.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


# --------------------------------------------------------------------------- answers
def test_models_lists_the_one_served_model(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["gpt2-tiny"]
    assert client.models.retrieve("gpt2-tiny").id == "gpt2-tiny"


def test_staggered_requests_get_the_answers_they_get_alone(client, workdir, gpt2):
    alone = [complete(client, p, n, temperature=0) for p, n in zip(PROMPTS, MAX_TOKENS)]
    jobs = [lambda p=p, n=n: complete(client, p, n, temperature=0) for p, n in zip(PROMPTS, MAX_TOKENS)] * 2
    loaded = staggered(jobs)
    for i, got in enumerate(loaded):
        want = alone[i % len(PROMPTS)]
        assert not isinstance(got, Exception), got
        assert got.choices[0].text == want.choices[0].text
        assert got.choices[0].finish_reason == want.choices[0].finish_reason
        assert got.usage.model_dump() == want.usage.model_dump()
    # ... and what the generation loop gives in process (greedy, the same cached graph)
    from GPT2.onnxrt import make_backend

    backend = make_backend(gpt2, make_cfg(workdir, "--use-cache", backends=("onnxrt",)), workdir)
    ids = gpt2.tokenizer(PROMPTS[1])["input_ids"]
    tokens = backend.generate(np.array([ids]), np.ones((1, len(ids)), np.int64),
                              make_cfg(workdir, "--use-cache", "--output-seq-len", "30").generation).tokens[0]
    assert alone[1].choices[0].text == gpt2.output_text("", tokens)
    assert alone[1].usage.prompt_tokens == len(ids) and alone[1].usage.total_tokens == len(ids) + 30


def test_a_seed_gives_the_same_sample_alone_or_under_load(client):
    sampled = dict(temperature=0.9, top_p=0.95, seed=1234, extra_body={"top_k": 40})
    alone = [complete(client, p, 25, **sampled).choices[0].text for p in PROMPTS[:3]]
    assert complete(client, PROMPTS[0], 25, **{**sampled, "seed": 99}).choices[0].text != alone[0]
    busy = [lambda p=p: complete(client, p, 40, temperature=0) for p in PROMPTS]
    mine = [lambda p=p: complete(client, p, 25, **sampled).choices[0].text for p in PROMPTS[:3]]
    results = staggered(busy[:3] + mine + busy[3:], gap_s=0.01)
    assert results[3:6] == alone


def test_stop_strings_end_the_answer_before_them(client):
    full = complete(client, PROMPTS[1], 30, temperature=0).choices[0].text
    stop = full[10:13]
    assert stop and full.index(stop) >= 5
    cut = complete(client, PROMPTS[1], 30, temperature=0, stop=[stop, "never-said"])
    assert cut.choices[0].text == full[: full.index(stop)] and cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < 30
    streamed = complete(client, PROMPTS[1], 30, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_a_stream_adds_up_to_the_answer_and_ends_with_done(client, server):
    whole = complete(client, PROMPTS[3], 40, temperature=0)
    chunks = list(complete(client, PROMPTS[3], 40, temperature=0, stream=True,
                           stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump() and chunks[-1].choices == []
    request = urllib.request.Request(f"{server.base_url}/completions", data=json.dumps(
        {"model": "gpt2-tiny", "prompt": PROMPTS[0], "max_tokens": 6, "temperature": 0, "stream": True}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        lines = [line for line in r.read().decode().split("\n") if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["object"] == "text_completion"


def test_logprobs_and_echo_as_lm_eval_reads_them(server, gpt2, workdir):
    """lm-eval's local-completions: token id prompts, max_tokens 1, echo, logprobs 1, a bearer header."""
    ids = [gpt2.tokenizer(p)["input_ids"] for p in PROMPTS[:3]]
    body = {"model": "gpt2-tiny", "prompt": ids, "max_tokens": 1, "temperature": 0, "logprobs": 1, "echo": True,
            "seed": 1234}
    status, out, _ = post(f"{server.base_url}/completions", body, {"Authorization": "Bearer EMPTY"})
    assert status == 200, out
    from GPT2.onnxrt import make_backend

    backend = make_backend(gpt2, make_cfg(workdir, "--use-cache", backends=("onnxrt",)), workdir)
    for choice, prompt in zip(sorted(out["choices"], key=lambda c: c["index"]), ids):
        lp = choice["logprobs"]
        values, tops = lp["token_logprobs"], lp["top_logprobs"]
        assert len(values) == len(tops) == len(lp["tokens"]) == len(prompt) + 1
        assert values[0] is None and tops[0] is None
        assert choice["text"].startswith(gpt2.tokenizer.decode(prompt))
        sequence = np.array([prompt], np.int64)
        reference = log_softmax(backend.logits(sequence, np.ones_like(sequence))[0])
        for position, (value, top) in enumerate(zip(values[1:len(prompt)], tops[1:len(prompt)])):
            token = prompt[position + 1]
            assert abs(value - reference[position, token]) < 1e-4
            assert (value == max(top.values())) == (token == int(reference[position].argmax()))
        assert values[-1] == max(tops[-1].values())       # the generated token is the greedy one
    assert out["usage"]["prompt_tokens"] == sum(len(p) for p in ids)
    assert out["usage"]["completion_tokens"] == len(ids)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("body,status,param", [
    ({"prompt": "hi", "temperature": -1}, 400, "temperature"),
    ({"prompt": "hi", "max_tokens": "ten"}, 400, "max_tokens"),
    ({"prompt": "hi", "n": 2}, 400, "n"),
    ({"prompt": [[1, 2], "x", 3]}, 400, "prompt"),
    ({"prompt": [99999]}, 400, "prompt"),
    ({"prompt": "hi", "max_tokens": 500}, 400, "max_tokens"),
    ({"prompt": [5] * 200, "max_tokens": 1}, 400, "prompt"),
    ({"prompt": "hi", "stop": ["a", ""]}, 400, "stop"),
    ({"prompt": "hi", "model": "gpt-9"}, 404, "model"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "messages"),
])
def test_bad_requests_get_openai_errors_and_the_server_goes_on(server, body, status, param):
    chat = "messages" in body
    got, out, _ = post(f"{server.base_url}/{'chat/completions' if chat else 'completions'}",
                       {"model": "gpt2-tiny", **body})
    assert got == status, out
    assert set(out["error"]) == {"message", "type", "param", "code"} and out["error"]["param"] == param
    assert out["error"]["message"] and out["error"]["type"] == "invalid_request_error"
    if chat:
        assert out["error"]["code"] == "chat_template_missing" and "--chat-template" in out["error"]["message"]
    ok, answer, _ = post(f"{server.base_url}/completions", {"model": "gpt2-tiny", "prompt": "Ben", "max_tokens": 2})
    assert ok == 200 and answer["usage"]["completion_tokens"] == 2


def test_malformed_json_and_unknown_routes(server, client):
    status, out, _ = post(f"{server.base_url}/completions", None, raw=b'{"model": "gpt2-tiny", "prompt": ')
    assert status == 400 and out["error"]["code"] == "invalid_json"
    status, out, _ = post(f"{server.base_url}/nothing-here", {})
    assert status == 404 and out["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other-model", prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="gpt2-tiny", prompt="x", max_tokens=1000)
    assert e.value.body["code"] == "context_length_exceeded"


def test_metrics_count_requests_tokens_and_latencies(server, client):
    before = metric(server, "hf_trt_generation_tokens_total")
    complete(client, "Ben", 7, temperature=0)
    assert metric(server, "hf_trt_generation_tokens_total") == before + 7
    assert metric(server, 'hf_trt_requests_total{outcome="length"}') >= 1
    assert metric(server, 'hf_trt_requests_total{outcome="invalid"}') >= 1
    assert metric(server, "hf_trt_prompt_tokens_total") > 0
    for histogram in ("time_to_first_token_seconds", "time_per_output_token_seconds", "e2e_request_latency_seconds"):
        assert metric(server, f"hf_trt_{histogram}_count") >= 1
    assert metric(server, "hf_trt_requests_waiting") == 0


def test_the_readme_examples_run(server):
    """The curl and openai examples of README's "OpenAI-compatible server" section, against this server."""
    import subprocess
    import sys

    section = (ROOT / "README.md").read_text().split("## Serving with an OpenAI-compatible API", 1)[1].split("\n## ", 1)[0]
    curl = re.findall(r"```bash\n(curl .*?)```", section, re.S)
    python = re.findall(r"```python\n(.*?)```", section, re.S)
    assert curl and python
    port = str(server.http_port)
    for command in curl:
        out = subprocess.run(command.replace("8000", port), shell=True, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and '"choices"' in out.stdout, (command, out.stdout, out.stderr)
    for code in python:
        out = subprocess.run([sys.executable, "-c", code.replace("8000", port)], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0 and out.stdout.strip(), (code, out.stdout, out.stderr)


# --------------------------------------------------------------------------- a guarded, one-row server
@pytest.fixture(scope="module")
def guarded(workdir, tmp_path_factory, gpt2_512):
    """Tiny GPT2 with 512 positions, so an answer can be long enough (500 steps) that a client leaves, a queue
    fills or SIGTERM comes while it is decoded, however busy the machine."""
    folder = tmp_path_factory.mktemp("guarded")
    template = folder / "template.jinja"
    template.write_text(TINY_CHAT_TEMPLATE)
    proc = OpenAIServer(("GPT2", "onnxrt", "--use-cache", "--torch-dir", str(gpt2_512[1])), str(workdir.root),
                        folder / "server.log",
                        "--max-batch-size", "1", "--max-queue", "1", "--api-key", KEY, "--max-request-bytes", "20000",
                        "--chat-template", str(template), "--served-model-name", "guarded")
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.terminate()


def test_the_api_key_is_required_on_v1_endpoints(guarded):
    body = {"model": "guarded", "prompt": "Ben", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        status, out, head = post(f"{guarded.base_url}/completions", body, headers)
        assert status == 401 and out["error"]["code"] == "invalid_api_key" and head.get("WWW-Authenticate") == "Bearer"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=guarded.base_url, api_key="wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=guarded.base_url, api_key=KEY, max_retries=0)
    assert good.completions.create(model="guarded", prompt="Ben", max_tokens=2).usage.completion_tokens == 2
    with urllib.request.urlopen(f"http://{HOST}:{guarded.http_port}/health", timeout=10) as r:   # open to probes
        assert r.status == 200


def test_a_body_over_the_limit_is_413(guarded):
    status, out, _ = post(f"{guarded.base_url}/completions", {"model": "guarded", "prompt": "word " * 5000},
                          {"Authorization": f"Bearer {KEY}"})
    assert status == 413 and out["error"]["code"] == "request_too_large"


def test_a_full_queue_is_503_with_retry_after(guarded):
    body = {"model": "guarded", "prompt": [5] * 3, "max_tokens": 500, "temperature": 0}
    results = concurrently([lambda: post(f"{guarded.base_url}/completions", body, {"Authorization": f"Bearer {KEY}"})] * 5)
    statuses = sorted(status for status, _, _ in results)
    # one row and a queue of one: whatever the timing, some are answered and the rest refused
    assert set(statuses) == {200, 503}
    busy = next(r for r in results if r[0] == 503)
    assert busy[2]["Retry-After"] == "1" and busy[1]["error"]["code"] == "queue_full"


def test_more_prompts_than_the_queue_holds_is_400_not_503(guarded):
    status, out, _ = post(f"{guarded.base_url}/completions", {"model": "guarded", "prompt": [[5], [6]], "max_tokens": 1},
                          {"Authorization": f"Bearer {KEY}"})
    assert status == 400 and out["error"]["code"] == "too_many_prompts"


def test_chat_with_a_template_file(guarded):
    client = openai.OpenAI(base_url=guarded.base_url, api_key=KEY, max_retries=0)
    answer = client.chat.completions.create(model="guarded", messages=[{"role": "user", "content": "Hello there"}],
                                            max_tokens=5, temperature=0)
    assert answer.choices[0].message.role == "assistant" and answer.usage.completion_tokens == 5
    assert answer.object == "chat.completion"


def test_a_client_that_goes_away_mid_stream_frees_its_row(guarded):
    cancelled = metric(guarded, 'hf_trt_requests_total{outcome="cancelled"}')
    generated = metric(guarded, "hf_trt_generation_tokens_total")
    request = urllib.request.Request(f"{guarded.base_url}/completions", data=json.dumps(
        {"model": "guarded", "prompt": [7] * 4, "max_tokens": 500, "temperature": 0, "stream": True}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    response = urllib.request.urlopen(request, timeout=60)
    assert response.readline().startswith(b"data: ")
    response.close()      # the connection goes away with most of the answer unsent
    deadline = time.monotonic() + 60
    while metric(guarded, 'hf_trt_requests_total{outcome="cancelled"}') < cancelled + 1:
        assert time.monotonic() < deadline, "the row was not freed"
        time.sleep(0.1)
    assert metric(guarded, "hf_trt_generation_tokens_total") - generated < 500     # it ended before its answer did
    while metric(guarded, "hf_trt_requests_running") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_sigterm_finishes_in_flight_requests_and_exits_0(guarded):
    request = urllib.request.Request(f"{guarded.base_url}/completions", data=json.dumps(
        {"model": "guarded", "prompt": [5] * 3, "max_tokens": 500, "temperature": 0, "stream": True}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    response = urllib.request.urlopen(request, timeout=60)
    first = response.readline()
    assert first.startswith(b"data: ")
    guarded.proc.send_signal(15)
    rest = response.read().decode()
    events = [json.loads(line[6:]) for line in (first.decode() + rest).split("\n") if line.startswith("data: {")]
    assert rest.rstrip().endswith("data: [DONE]") and events[-1]["choices"][0]["finish_reason"] == "length"
    assert guarded.proc.wait(60) == 0
    assert "stopped" in guarded.output()
    with pytest.raises(OSError):     # no longer accepting
        urllib.request.urlopen(f"http://{HOST}:{guarded.http_port}/health", timeout=5)


# --------------------------------------------------------------------------- chat templates
@pytest.fixture(scope="module")
def llama(workdir, tmp_path_factory):
    log = tmp_path_factory.mktemp("llama") / "server.log"
    proc = OpenAIServer(("LLAMA", "onnxrt", "--use-cache"), str(workdir.root), log, "--served-model-name",
                        "llama-chat")
    try:
        proc.wait_healthy()
        yield proc
    finally:
        assert proc.terminate() == 0


def test_chat_uses_the_tokenizers_own_template(llama, workdir):
    client = openai.OpenAI(base_url=llama.base_url, api_key="x", max_retries=0)
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "The lighthouse"}]
    chat = client.chat.completions.create(model="llama-chat", messages=messages, max_tokens=9, temperature=0)
    cfg = dataclasses.replace(make_cfg(workdir), family="LLAMA", variant="llama-tiny")
    tokenizer = get_family("LLAMA").load(cfg).tokenizer
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|assistant|>\n") and "<|system|>\nYou are terse." in text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    plain = client.completions.create(model="llama-chat", prompt=ids, max_tokens=9, temperature=0)
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.usage.prompt_tokens == len(ids)
    pieces = list(client.chat.completions.create(model="llama-chat", messages=messages, max_tokens=9, temperature=0,
                                                 stream=True))
    assert pieces[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in pieces) == chat.choices[0].message.content
    assert pieces[-1].choices[0].finish_reason == chat.choices[0].finish_reason
