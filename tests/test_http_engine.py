"""The OpenAI-compatible HTTP engine: unit tests against a tiny fake server, and tests
against a real ``python -m llama_cpp.server`` (marked ``model``)."""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
import urllib.request
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cai_tools.cli.running import Console
from cai_tools.engines import EngineOptions, open_engine
from cai_tools.engines.base import Generation, ItemError, SamplingParams
from cai_tools.engines.openai_http_engine import OpenAIHttpEngine, option_logprobs
from cai_tools.errors import CaiError, UsageError
from conftest import ROOT, jsonl, parse_jsonl, run_cai

SECRET = "sk-test-secret-0123456789"
LOG2 = math.log(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def completion(text: str, logprobs=None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": text},
              "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"choices": [choice], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


def tok(token: str, logprob: float, *top: tuple[str, float]) -> dict:
    """One position of an OpenAI logprobs.content list: the sampled token and the top list."""
    listed = [{"token": t, "logprob": lp} for t, lp in top] or [{"token": token, "logprob": logprob}]
    return {"token": token, "logprob": logprob, "top_logprobs": listed}


# ---------------------------------------------------------------- the fake server


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        api = self.server
        api.gets.append(dict(self.headers))
        api.paths.append(self.path)
        if self.path.split("?")[0] == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": m} for m in api.models]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        api = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with api.lock:
            api.paths.append(self.path)
            api.posts.append((dict(self.headers), body))
            n = len(api.posts)
            api.in_flight += 1
            api.max_in_flight = max(api.max_in_flight, api.in_flight)
        try:
            if self.path.split("?")[0] != "/v1/chat/completions":
                reply = 404, {"error": {"message": f"no route {self.path}"}}
            elif n <= api.fail_first:
                reply = api.fail_status, {"error": {"message": api.fail_message(self.headers)}}
            else:
                reply = api.answer(body, dict(self.headers))
        finally:
            # Counted out before the reply goes: once it is sent, the client may start the next
            # request before this handler would get to count this one out.
            with api.lock:
                api.in_flight -= 1
                api.finished.append(body["messages"][-1]["content"])
        self._send(*reply)


def echo_answer(body: dict, headers: dict):
    """'sleep S ...' waits S seconds; 'TOO LONG' is refused like a too-long prompt."""
    content = body["messages"][-1]["content"]
    if content.startswith("sleep "):
        time.sleep(float(content.split()[1]))
    if "TOO LONG" in content:
        return 400, {"error": {"message": "This model's maximum context length is 2048 tokens",
                               "type": "invalid_request_error"}}
    return 200, completion(f"echo: {content}")


class FakeAPI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.models = ["served-model", "other-model"]
        self.gets: list[dict] = []
        self.paths: list[str] = []
        self.posts: list[tuple[dict, dict]] = []
        self.finished: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self.fail_first, self.fail_status = 0, 503
        self.fail_message = lambda headers: "busy"
        self.answer = echo_answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


def _serving():
    server = FakeAPI()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


api = pytest.fixture(_serving, name="api")
api2 = pytest.fixture(_serving, name="api2")   # a second server, for several-server runs


def engine_for(api, **kwargs) -> OpenAIHttpEngine:
    kwargs.setdefault("backoff", 0.01)
    return OpenAIHttpEngine(api.url, **kwargs)


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch):
    for name in ("CAI_API_KEY", "OPENAI_API_KEY", "MY_KEY"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- generate


def test_generate_keeps_input_order_when_answers_finish_out_of_order(api):
    engine = engine_for(api, parallel=3)
    chats = [user(f"sleep {d} item{i}") for i, d in enumerate([0.3, 0.2, 0.1, 0.25, 0.0, 0.05])]
    params = [SamplingParams(max_tokens=9, temperature=0.5, top_p=0.9, top_k=30, seed=100 + i)
              for i in range(len(chats))]
    out = engine.generate(chats, params)
    engine.close()
    assert [g.text for g in out] == [f"echo: {c[0]['content']}" for c in chats]
    assert all(isinstance(g, Generation) and g.prompt_tokens == 7 and g.completion_tokens == 3
               for g in out)
    assert api.finished != [c[0]["content"] for c in chats]  # they really finished out of order
    assert api.max_in_flight == 3  # parallel requests, never more than asked
    bodies = sorted((b for _, b in api.posts), key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [100, 101, 102, 103, 104, 105]  # per-record seeds
    first = bodies[0]
    assert first["model"] == "served-model" and first["messages"] == chats[0]
    assert (first["max_tokens"], first["temperature"], first["top_p"], first["top_k"]) == (9, 0.5, 0.9, 30)
    assert "stop" not in first


def test_model_is_discovered_and_info_has_no_secret(api, monkeypatch):
    monkeypatch.setenv("CAI_API_KEY", SECRET)
    engine = OpenAIHttpEngine(api.url + "/", parallel=2)  # no /v1: normalised
    assert engine.model_name == "served-model"
    assert engine.info.as_dict() == {"backend": "openai-http", "model": "served-model",
                                     "fingerprint": None, "base_url": api.url + "/v1",
                                     "parallel": 2}
    assert SECRET not in repr(engine.info) and SECRET not in repr(vars(engine.info))
    engine.close()
    named = OpenAIHttpEngine(api.url + "/v1", "other-model")
    assert named.info.model == "other-model" and len(api.gets) == 1  # no second discovery
    named.close()


def test_transient_failures_are_retried_then_succeed(api):
    api.fail_first = 2
    engine = engine_for(api, model_name="m", retries=3)
    (out,) = engine.generate([user("hello")], [SamplingParams()])
    assert out.text == "echo: hello" and len(api.posts) == 3


def test_429_is_retried(api):
    api.fail_first, api.fail_status = 1, 429
    engine = engine_for(api, model_name="m", retries=1)
    (out,) = engine.generate([user("hi")], [SamplingParams()])
    assert out.text == "echo: hi" and len(api.posts) == 2


def test_a_timeout_is_retried(api):
    calls = []

    def slow_first(body, headers):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.0)
        return 200, completion("late but fine")

    api.answer = slow_first
    engine = engine_for(api, model_name="m", timeout=0.2, retries=1)
    (out,) = engine.generate([user("x")], [SamplingParams()])
    assert out.text == "late but fine" and len(calls) == 2


def test_a_server_that_stays_failing_is_a_caierror(api):
    api.fail_first = 100
    engine = engine_for(api, model_name="m", retries=2, parallel=2)
    with pytest.raises(CaiError) as err:
        engine.generate([user("a"), user("b")], [SamplingParams()] * 2)
    assert str(err.value) == f"server {api.url}/v1 still failing after 2 retries: HTTP 503: busy"
    assert len(api.posts) <= 6  # 3 attempts each at most: the first failure stops the other
    engine.close()


def test_a_server_that_is_down_is_a_caierror_after_retries():
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(CaiError) as err:
        OpenAIHttpEngine(url, retries=2, backoff=0.01)  # model discovery fails
    assert str(err.value) == f"server {url}/v1 unreachable after 2 retries: Connection refused"
    engine = OpenAIHttpEngine(url, "m", retries=1, backoff=0.01)  # no request until used
    with pytest.raises(CaiError, match="unreachable after 1 retries: Connection refused"):
        engine.generate([user("a")], [SamplingParams()])
    assert time.monotonic() - start < 5
    engine.close()


def test_a_4xx_is_an_item_error_with_the_servers_message(api):
    engine = engine_for(api, model_name="m")
    out = engine.generate([user("fine"), user("TOO LONG " * 5), user("also fine")],
                          [SamplingParams()] * 3)
    assert out[0].text == "echo: fine" and out[2].text == "echo: also fine"
    assert isinstance(out[1], ItemError)
    assert out[1].message == ("the server rejected the request: HTTP 400: This model's maximum "
                              "context length is 2048 tokens")
    assert len(api.posts) == 3  # a 400 is not retried


def test_the_api_key_is_sent_and_never_appears_in_errors(api, monkeypatch):
    monkeypatch.setenv("CAI_API_KEY", SECRET)
    api.answer = lambda body, headers: (401, {"error": {"message": f"bad {headers['Authorization']}"}})
    engine = engine_for(api)
    assert api.gets[0]["Authorization"] == f"Bearer {SECRET}"
    (out,) = engine.generate([user("a")], [SamplingParams()])
    assert api.posts[0][0]["Authorization"] == f"Bearer {SECRET}"
    assert isinstance(out, ItemError) and "bad Bearer ***" in out.message
    assert SECRET not in out.message
    api.fail_first, api.fail_message = 100, lambda headers: f"echo {headers['Authorization']}"
    with pytest.raises(CaiError) as err:
        engine_for(api, model_name="m", retries=1).generate([user("a")], [SamplingParams()])
    assert "still failing" in str(err.value) and SECRET not in str(err.value)
    assert SECRET not in json.dumps(engine.info.as_dict())


def test_the_api_key_env_fallbacks(api, monkeypatch):
    OpenAIHttpEngine(api.url).close()
    assert "Authorization" not in api.gets[-1]  # no key, no header
    monkeypatch.setenv("OPENAI_API_KEY", "openai-key")
    OpenAIHttpEngine(api.url).close()
    assert api.gets[-1]["Authorization"] == "Bearer openai-key"
    monkeypatch.setenv("MY_KEY", "mine")
    OpenAIHttpEngine(api.url, api_key_env="MY_KEY").close()
    assert api.gets[-1]["Authorization"] == "Bearer mine"


def test_close_shuts_the_pool_down(api):
    engine = engine_for(api, model_name="m")
    engine.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        engine.generate([user("a")], [SamplingParams()])


# ---------------------------------------------------------------- choice log-probabilities


def test_options_after_a_shared_open_paren_token():
    tokens = [tok("(", -0.1, ("(", -0.1), ("The", -2.5)),
              tok("A", -0.3, ("A", -0.3), ("B", -1.5), ("C", -3.0)),
              tok(")", -0.01)]
    a, b = option_logprobs(tokens, ["(A)", "(B)"])
    assert a == pytest.approx(-0.4) and b == pytest.approx(-1.6)  # the path's "(" included
    assert softmax([a, b])[0] == pytest.approx(math.exp(-0.3) / (math.exp(-0.3) + math.exp(-1.5)))


def test_options_as_single_tokens_with_or_without_a_space():
    tokens = [tok(" (A", -0.5, (" (A", -0.5), ("(B", -1.2), ("(B)", -2.0), ("Hello", -2.2))]
    a, b = option_logprobs(tokens, ["(A)", "(B)"])
    assert a == pytest.approx(-0.5)
    assert b == pytest.approx(math.log(math.exp(-1.2) + math.exp(-2.0)))  # both ways to "(B"


def test_leading_whitespace_token_is_skipped():
    tokens = [tok(" ", -0.2, (" ", -0.2), ("(B)", -3.0)), tok("(A)", -0.1, ("(A)", -0.1), ("(B)", -2.4))]
    a, b = option_logprobs(tokens, ["(A)", "(B)"])
    # B: -3.0 directly, or after the space -0.2 - 2.4; A only after the space, floored before.
    assert b == pytest.approx(math.log(math.exp(-3.0) + math.exp(-2.6)))
    assert a == pytest.approx(math.log(math.exp(-3.0 - LOG2) + math.exp(-0.3)))


def test_both_tokenizations_of_an_option_add_up():
    tokens = [tok("(", -0.2, ("(", -0.2), ("(A", -2.0), ("X", -4.0)),
              tok("B", -0.1, ("B", -0.1), ("A", -2.5))]
    a, b = option_logprobs(tokens, ["(A)", "(B)"])
    assert a == pytest.approx(math.log(math.exp(-2.0) + math.exp(-0.2 - 2.5)))
    assert b == pytest.approx(math.log(math.exp(-4.0 - LOG2) + math.exp(-0.2 - 0.1)))


def test_an_option_missing_from_top_logprobs_gets_a_floor():
    tokens = [tok("(A", -0.2, ("(A", -0.2), ("Sure", -1.0), ("x", -3.0))]
    a, b = option_logprobs(tokens, ["(A)", "(B)"])
    assert a == pytest.approx(-0.2) and b == pytest.approx(-3.0 - LOG2)
    assert b < min(-0.2, -1.0, -3.0)  # below every listed token


def test_options_without_a_common_prefix():
    tokens = [tok("Yes", -0.7, ("Yes", -0.7), (" No", -0.9), ("Maybe", -2.0))]
    assert option_logprobs(tokens, ["Yes", "No"]) == pytest.approx([-0.7, -0.9])


def test_no_option_found_is_an_item_error():
    tokens = [tok("The", -0.5, ("The", -0.5), ("(", -2.0), ("A", -2.2)),
              tok(" answer", -0.1, (" answer", -0.1)), tok(" (", -0.2, (" (", -0.2)),
              tok("A", -0.1, ("A", -0.1), ("B", -1.0))]
    err = option_logprobs(tokens, ["(A)", "(B)"])
    assert isinstance(err, ItemError)
    assert err.message.startswith("the server's top_logprobs contain none of the options (A), (B)")
    assert "'The'" in err.message


def test_choice_logprobs_through_the_server(api):
    def answer(body, headers):
        if "no logprobs" in body["messages"][-1]["content"]:
            return 200, completion("(A)")
        return 200, completion("(B)", [tok("(B", -0.2, ("(B", -0.2), ("(A", -1.1)), tok(")", 0.0)])

    api.answer = answer
    engine = engine_for(api, model_name="m")
    chat = [{"role": "system", "content": "judge"}, *user("Which is better?"),
            {"role": "assistant", "content": "Let me see."}]
    out = engine.choice_logprobs([chat, user("no logprobs")], [["(A)", "(B)"], ["(A)", "(B)"]],
                                 cue="The answer is:")
    assert out[0] == pytest.approx([-1.1, -0.2])
    assert isinstance(out[1], ItemError) and "no logprobs" in out[1].message
    body = api.posts[0][1] if api.posts[0][1]["messages"][0]["role"] == "system" else api.posts[1][1]
    assert body["messages"][1]["content"] == "Which is better?\nThe answer is:"  # cue in user turn
    assert body["messages"][2] == chat[2] and len(body["messages"]) == 3
    assert chat[1]["content"] == "Which is better?"  # the caller's chat is not modified
    assert (body["temperature"], body["logprobs"], body["top_logprobs"]) == (0.0, True, 20)
    assert body["max_tokens"] >= 4


# ---------------------------------------------------------------- open_engine


def test_open_engine_with_a_url_or_a_server_option(api, capsys):
    note = Console("generate").note
    opts = EngineOptions(ctx=2048, parallel=5)
    engine = open_engine(replace(opts, model=api.url + "/v1"), note)
    assert isinstance(engine, OpenAIHttpEngine)
    assert (engine.model_name, engine.parallel, engine.base_url) == ("served-model", 5, api.url + "/v1")
    engine.close()
    engine = open_engine(replace(opts, model="other-model", server=api.url), note)
    assert engine.model_name == "other-model" and len(api.gets) == 1
    engine.close()
    err = capsys.readouterr().err
    assert f"cai generate: using server {api.url}/v1, model served-model (discovered)" in err
    assert f"using server {api.url}/v1, model other-model, --parallel 5" in err
    with pytest.raises(UsageError, match="starts with http:// or https://"):
        open_engine(replace(opts, model="m", server="ftp://example.org"), note)
    with pytest.raises(UsageError):
        open_engine(replace(opts, model=api.url, server=api.url), note)


def test_registered_engines_open_by_name():
    from cai_tools.engines import register_engine
    from cai_tools.engines.fake_engine import FakeEngine

    scripted = FakeEngine(responder=lambda chat, params: "scripted")
    register_engine("scripted-test", lambda options: scripted)
    assert open_engine(EngineOptions(model="scripted-test")) is scripted
    assert isinstance(open_engine(EngineOptions(model="fake")), FakeEngine)
    with pytest.raises(UsageError, match="--lora needs a real GGUF"):
        open_engine(EngineOptions(model="fake", lora="x.gguf"))


# ---------------------------------------------------------------- several servers


def test_several_servers_share_the_requests_and_keep_input_order(api, api2):
    from cai_tools.engines.multi_server import MultiServerEngine

    notes = []
    engine = MultiServerEngine([api.url, api2.url], parallel=2, note=notes.append, backoff=0.01)
    assert engine.model_name == "served-model"          # discovered from the first server
    chats = [user(f"sleep {0.05 * (i % 3)} item{i}") for i in range(12)]
    params = [SamplingParams(max_tokens=5, seed=i) for i in range(12)]
    out = engine.generate(chats, params)
    assert [g.text for g in out] == [f"echo: sleep {0.05 * (i % 3)} item{i}" for i in range(12)]
    assert len(api.posts) + len(api2.posts) == 12 and len(api.posts) >= 3 and len(api2.posts) >= 3
    assert max(api.max_in_flight, api2.max_in_flight) <= 2               # --parallel per server
    # each request carries its own seed, whichever server takes it
    assert sorted(b["seed"] for _, b in api.posts + api2.posts) == list(range(12))
    engine.close()
    assert "12 requests over 2 servers" in notes[-1]


def test_a_dead_server_is_taken_out_and_the_run_finishes_on_the_rest(api, api2):
    from cai_tools.engines.multi_server import MultiServerEngine

    notes = []
    dead = f"http://127.0.0.1:{free_port()}"                # nothing listens there
    engine = MultiServerEngine([dead, api.url, api2.url], parallel=2, note=notes.append, backoff=0.01,
                               retry_after=60)
    out = engine.generate([user(f"item{i}") for i in range(8)], [SamplingParams(seed=i) for i in range(8)])
    assert [g.text for g in out] == [f"echo: item{i}" for i in range(8)]
    warnings = [n for n in notes if n.startswith("warning:") and dead in n]
    assert len(warnings) == 1 and "tried again in 60 s" in warnings[0]   # said once, not per request
    api.shutdown()
    api.server_close()
    out = engine.generate([user(f"sleep 0.05 more{i}") for i in range(6)], [SamplingParams(seed=i) for i in range(6)])
    assert [g.text for g in out] == [f"echo: sleep 0.05 more{i}" for i in range(6)]   # all on the last one
    assert api2.max_in_flight <= 2    # its share grew, its concurrency did not
    api2.shutdown()
    api2.server_close()
    with pytest.raises(CaiError, match="every server is down"):
        engine.generate([user("x")], [SamplingParams()])
    engine.close()


def test_server_list_file_and_its_errors(api, api2, tmp_path):
    listing = tmp_path / "servers.txt"
    listing.write_text(f"# my two\n{api.url}\n\n{api2.url}  # the second\n")
    result = run_cai("generate", "--server", f"@{listing}", "--max-tokens", "4", input=jsonl(
        [{"prompt": f"p{i}"} for i in range(6)]))
    assert result.returncode == 0, result.stderr
    assert [r["response"] for r in parse_jsonl(result.stdout)] == [f"echo: p{i}" for i in range(6)]
    assert api.posts and api2.posts and b"using 2 servers" in result.stderr
    assert b"6 requests over 2 servers" in result.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n")
    for arg, message in ((f"@{empty}", b"names no URL"), (f"@{tmp_path / 'none.txt'}", b"cannot read the server list")):
        bad = run_cai("generate", "--server", arg, input=b'{"prompt": "x"}\n')
        lines = [x for x in bad.stderr.splitlines() if b"error" in x]
        assert bad.returncode == 1 and len(lines) == 1 and message in lines[0]
    down = run_cai("generate", "--server", f"http://127.0.0.1:{free_port()}", "--server",
                   f"http://127.0.0.1:{free_port()}", input=b'{"prompt": "x"}\n')
    assert down.returncode == 1 and b"every server is down" in down.stderr


# ---------------------------------------------------------------- a real llama_cpp.server


def start_llama_server(model_path, log_path: Path) -> tuple[subprocess.Popen, str]:
    """A ``python -m llama_cpp.server`` on a free port, answering /v1/models: (process, its URL)."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
             # Its default (all cores for prompts) made each prompt take ~8 s on 2 cores.
             "--n_threads_batch", str(max(1, (os.cpu_count() or 2) // 2))],
            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {proc.returncode} (is "
                        f"llama-cpp-python[server] installed?):\n"
                        f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            urllib.request.urlopen(url + "/models", timeout=2).close()
            return proc, url
        except OSError:
            if time.monotonic() > deadline:
                stop_server(proc)
                pytest.fail("llama_cpp.server did not answer /v1/models within 60 s")
            time.sleep(0.25)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def llama_server(model_path, tmp_path_factory):
    proc, url = start_llama_server(model_path, tmp_path_factory.mktemp("server") / "server.log")
    try:
        yield url
    finally:
        stop_server(proc)


@pytest.mark.model
def test_real_server_generates_in_input_order(llama_server):
    engine = OpenAIHttpEngine(llama_server, parallel=2)
    assert engine.model_name.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    chats = [user("Name a fruit."), user("Count from one to five."), user("Say hello in French.")]
    greedy = SamplingParams(max_tokens=24, temperature=0.0)
    together = engine.generate(chats, [greedy] * 3)
    assert all(isinstance(g, Generation) and g.text.strip() for g in together)
    # Greedy decoding is deterministic: each slot must hold its own chat's answer.
    alone = [engine.generate([chat], [greedy])[0].text for chat in chats]
    assert [g.text for g in together] == alone
    assert len(set(alone)) == 3
    engine.close()


@pytest.mark.model
def test_real_server_choice_logprobs(llama_server):
    engine = OpenAIHttpEngine(llama_server, parallel=2)
    prompt = ("Consider the following conversation between a human and an assistant:\n"
              "Human: How do I bake bread?\n\n"
              "Which of these assistant responses is less harmful?\nOptions:\n"
              "(A) Mix flour, water, yeast and salt, knead, let rise and bake.\n"
              "(B) Go away.\nAnswer with (A) or (B).")
    (scores,) = engine.choice_logprobs([user(prompt)], [["(A)", "(B)"]])
    assert not isinstance(scores, ItemError), scores
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert 0.0 < softmax(scores)[0] < 1.0
    engine.close()


@pytest.mark.model
def test_real_server_cli_generate(llama_server):
    prompts = [{"prompt": "Write one sentence about autumn."}, {"prompt": "What is 2 + 2?"}]
    res = run_cai("generate", "--model", llama_server, "--max-tokens", "16", "--seed", "3",
                  input=jsonl(prompts))
    assert res.returncode == 0, res.stderr
    assert f"using server {llama_server}".encode() in res.stderr
    records = parse_jsonl(res.stdout)
    assert [r["prompt"] for r in records] == [p["prompt"] for p in prompts]
    for rec in records:
        assert rec["response"].strip()
        engine = rec["_cai"]["steps"][0]["engine"]
        assert engine["backend"] == "openai-http" and engine["base_url"] == llama_server
        assert engine["model"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_a_server_going_away_mid_run_keeps_written_records_whole(api):
    """Records before the failure are emitted complete; the step then stops with CaiError."""
    from cai_tools.sl.generate import generate

    api.answer = lambda body, headers: (503, {"error": {"message": "gone"}}) \
        if len(api.posts) > 4 else echo_answer(body, headers)
    engine = engine_for(api, parallel=2, retries=2)
    written = []
    with pytest.raises(CaiError, match="still failing after 2 retries"):
        for rec in generate([{"prompt": f"q{i}"} for i in range(8)], engine, batch_size=2):
            written.append(rec)
    engine.close()
    assert [r["prompt"] for r in written] == ["q0", "q1", "q2", "q3"]
    assert all(r["response"] == f"echo: q{i}" for i, r in enumerate(written))


def test_a_password_in_the_url_is_sent_as_basic_auth_and_never_shown(api):
    url = api.url.replace("http://", "http://bob:s3cret@")
    engine = OpenAIHttpEngine(url, backoff=0.01)
    assert api.gets[0]["Authorization"] == "Basic " + base64.b64encode(b"bob:s3cret").decode()
    assert "s3cret" not in engine.base_url and "s3cret" not in json.dumps(engine.info.as_dict())
    api.answer = lambda body, headers: (401, {"error": {"message": f"no {headers['Authorization']}"}})
    (out,) = engine.generate([user("a")], [SamplingParams()])
    assert isinstance(out, ItemError) and "Ym9iOnMzY3JldA" not in out.message
    done = run_cai("generate", "--server", url, "--model", "served-model", "--on-error", "skip",
                   input=b'{"prompt": "hi"}\n')
    assert done.returncode == 0, done.stderr
    assert b"s3cret" not in done.stderr and b"s3cret" not in done.stdout
    assert b"127.0.0.1" in done.stderr   # the URL itself is still shown, without the password


def test_a_query_string_is_sent_with_every_request_and_never_shown(api):
    url = f"{api.url}/v1?api_key={SECRET}&x=1"
    done = run_cai("generate", "--server", url, input=b'{"prompt": "hi"}\n')
    assert done.returncode == 0, done.stderr
    assert api.paths == [f"/v1/models?api_key={SECRET}&x=1", f"/v1/chat/completions?api_key={SECRET}&x=1"]
    assert SECRET.encode() not in done.stderr + done.stdout and b"127.0.0.1" in done.stderr
    api.answer = lambda body, headers: (500, {"error": {"message": f"bad key {SECRET}"}})
    failed = run_cai("generate", "--server", url, "--server-retries", "0", input=b'{"prompt": "hi"}\n')
    assert failed.returncode == 1 and b"bad key ***" in failed.stderr and SECRET.encode() not in failed.stderr


@pytest.mark.parametrize("args, says", [
    (["--server", "http://[::1"], "--server http://[::1: not a valid URL (Invalid IPv6 URL)"),
    (["-m", "http://[::1"], "-m http://[::1: not a valid URL"),
    (["--server", "http://127.0.0.1:99999"], "not a valid URL (Port out of range"),
    (["--server", "http://"], "the URL names no host"),
    (["--server", "ftp://bob:s3cret@example.org/x?key=k3y"], "--server ftp://***@example.org/x?key=***: a server's URL"),
    (["-m", "ftp://bob:s3cret@example.org/x.gguf"], "-m ftp://***@example.org/x.gguf: a server's URL starts with"),
    (["--server", "http://127.0.0.1:1", "--server-timeout", "0"], "--server-timeout must be more than 0"),
])
def test_server_urls_that_cannot_be_used_are_one_usage_line(args, says):
    result = run_cai("generate", *args, input=b'{"prompt": "x"}\n')
    lines = [x for x in result.stderr.decode().splitlines() if "error" in x]
    assert result.returncode == 2 and len(lines) == 1 and says in lines[0], result.stderr
    assert "s3cret" not in result.stderr.decode() and "k3y" not in result.stderr.decode()


def test_a_server_list_file_that_is_not_utf8_or_holds_a_bad_url_names_file_and_line(api, tmp_path):
    binary, bad = tmp_path / "binary.txt", tmp_path / "bad.txt"
    binary.write_bytes(f"{api.url}\n".encode() + b"\xff\xfe\n")
    bad.write_text(f"{api.url}\n# a comment\nhttp://[::1\n")
    for listing, says in ((binary, f"{binary}: the server list is not UTF-8 text (byte "),
                          (bad, f"{bad}:3: a server http://[::1: not a valid URL")):
        result = run_cai("generate", "--server", f"@{listing}", input=b'{"prompt": "x"}\n')
        lines = [x for x in result.stderr.decode().splitlines() if "error" in x]
        assert result.returncode == 1 and len(lines) == 1 and says in lines[0], result.stderr


def test_an_upper_case_scheme_is_a_url(api):
    done = run_cai("generate", "--server", api.url.replace("http://", "HTTP://"), input=b'{"prompt": "hi"}\n')
    assert done.returncode == 0, done.stderr


def test_a_server_that_never_answers_is_retried_aloud_then_a_one_line_error():
    """It accepts the connection and says nothing: --server-timeout and --server-retries bound
    the wait, and each retry is said on stderr."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)   # connections queue up; none is ever answered
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        result = run_cai("generate", "--server", url, "-m", "m", "--server-timeout", "1", "--server-retries", "1",
                         input=b'{"prompt": "x"}\n', timeout=60)
        elapsed = time.monotonic() - start
    err = result.stderr.decode()
    assert result.returncode == 1 and elapsed < 20, (elapsed, err)
    assert "no answer within 1 s; retry 1 of 1 in 1 s" in err
    assert err.strip().splitlines()[-1].endswith("unreachable after 1 retries: no answer within 1 s")


def test_a_reply_without_text_is_an_item_error(api):
    api.answer = lambda body, headers: (200, {"choices": [{"message": {"role": "assistant",
                                                                      "content": None}}]})
    (out,) = engine_for(api, model_name="m").generate([user("a")], [SamplingParams()])
    assert isinstance(out, ItemError) and "no text" in out.message


@pytest.mark.model
def test_two_real_servers_one_killed_mid_run_lose_nothing(llama_server, model_path, tmp_path):
    """Two llama_cpp.server processes; the second is killed while the run is going: the run
    finishes on the first, and every record equals the one-server run's (each request has its
    own seed, so the answer does not depend on the server that gave it)."""
    prompts = jsonl([{"id": f"p{i}", "prompt": text} for i, text in enumerate([
        "Name a fruit.", "Count from one to five.", "Say hello in French.", "What is the capital of Italy?",
        "Give me a word that rhymes with cat.", "What colour is the sky?", "Name a planet.",
        "How many legs does a spider have?", "Write a two-word greeting.", "What do bees make?",
        "Name a musical instrument.", "What is two plus two?"])])
    args = ["generate", "--max-tokens", "12", "--seed", "3", "--parallel", "1"]
    one = run_cai(*args, "--server", llama_server, input=prompts, timeout=600)
    assert one.returncode == 0, one.stderr

    second, url2 = start_llama_server(model_path, tmp_path / "second.log")
    try:
        proc = subprocess.Popen([sys.executable, "-m", "cai_tools.cli.main", *args, "--server", llama_server,
                                 "--server", url2], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=ROOT)
        def kill_after_its_first_answer():   # mid-run: the second server dies with a request in flight
            deadline = time.monotonic() + 300
            while b"chat/completions" not in (tmp_path / "second.log").read_bytes() and time.monotonic() < deadline:
                time.sleep(0.05)
            second.kill()

        killer = threading.Thread(target=kill_after_its_first_answer, daemon=True)
        killer.start()
        out, err = proc.communicate(prompts, timeout=600)
        killer.join()
    finally:
        stop_server(second)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"is down" in err and b"(down 1x)" in err           # taken out, said once, reported
    report = [x for x in err.decode().splitlines() if "requests over 2 servers" in x][0]
    assert "12 requests" in report
    responses = {r["id"]: r["response"] for r in parse_jsonl(one.stdout)}
    assert {r["id"]: r["response"] for r in parse_jsonl(out)} == responses   # nothing lost, same answers
