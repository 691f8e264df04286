"""An engine that talks to an OpenAI-compatible HTTP server (llama.cpp's ``llama-server
--parallel N``, vLLM, ``python -m llama_cpp.server``...).

Standard library only. Requests run on a thread pool, ``parallel`` in flight at once, so a
server that batches concurrent requests can; one that serialises them (llama_cpp.server
does) simply queues them. Transient failures (connection errors, timeouts, HTTP 429 and
5xx) are retried with exponential backoff; a server still failing after that raises
``CaiError``, which stops the step cleanly (what was written so far stays resumable). Any
other 4xx answer is the item's own fault (a prompt longer than the context, say) and
becomes an ``ItemError`` with the server's message.

The API key is read from the environment and only ever sent as a header: it is kept out of
``info`` (provenance) and scrubbed from every error message.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from os.path import commonprefix
from typing import Callable, Sequence

from ..errors import CaiError
from ..models.chat_template import split_think_tags
from .base import EngineInfo, Generation, ItemError, Message, SamplingParams
from .server_urls import normalise_base_url, split_url

TOP_LOGPROBS = 20  # the most OpenAI (and vLLM by default) return
RETRY_NOTE_EVERY = 30.0   # seconds between two notes that requests are being retried
LOG2 = math.log(2.0)


class ClientError(Exception):
    """A 4xx answer other than 429: retrying would not help."""


class _Aborted(Exception):
    """Another request of the same batch failed for good; stop retrying this one."""


class OpenAIHttpEngine:
    """The engine for an OpenAI-compatible server: one /chat/completions request per chat,
    ``parallel`` in flight; without ``model_name``, the first model the server lists at /models."""

    def __init__(self, base_url: str, model_name: str | None = None, *, parallel: int = 4,
                 timeout: float = 120.0, retries: int = 4, backoff: float = 1.0,
                 api_key_env: str = "CAI_API_KEY", reasoning: str = "auto",
                 note: Callable[[str], None] = lambda message: None):
        """``timeout`` is per socket operation and must cover the time a request waits in
        the server's queue; ``retries`` more attempts follow the first, after ``backoff``,
        2x, 4x... seconds, each said to ``note`` (at most one line in RETRY_NOTE_EVERY seconds).
        ``reasoning`` on/off is sent as the template's ``enable_thinking`` (llama-server and vLLM
        pass ``chat_template_kwargs`` on); auto sends nothing."""
        base_url, self._basic_auth, self._query = split_url(base_url)
        self.base_url = normalise_base_url(base_url)
        self.note, self._noted = note, -RETRY_NOTE_EVERY
        self.parallel = max(1, int(parallel))
        self.timeout, self.retries, self.backoff = timeout, max(0, int(retries)), backoff
        self._api_key = os.environ.get(api_key_env) or os.environ.get("OPENAI_API_KEY") or None
        self.reasoning = reasoning
        self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="cai-http")
        try:
            self.model_name = model_name or self._discover_model()
        except BaseException:
            self.close()
            raise
        self.info = EngineInfo(backend="openai-http", model=self.model_name, fingerprint=None,
                               options={"base_url": self.base_url, "parallel": self.parallel})

    # ------------------------------------------------------------ HTTP

    def _scrub(self, text: str) -> str:
        query_values = [v for _, v in urllib.parse.parse_qsl(self._query) if len(v) > 2]
        for secret in (self._api_key, self._basic_auth and self._basic_auth.split()[1], *query_values):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _retrying(self, attempt: int, delay: float, last: str) -> None:
        """Say that a request is retried (a server that never answers is otherwise silent)."""
        now = time.monotonic()
        if now - self._noted >= RETRY_NOTE_EVERY:
            self._noted = now
            self.note(f"server {self.base_url}: {self._scrub(last)}; retry {attempt} of {self.retries} "
                      f"in {delay:g} s (--server-timeout, --server-retries)")

    def _request(self, path: str, payload: dict | None = None,
                 abort: threading.Event | None = None) -> dict:
        """One JSON request with retries; raises ClientError for a 4xx (not 429), CaiError
        when the server stays unreachable or failing."""
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        elif self._basic_auth:
            headers["Authorization"] = self._basic_auth
        unreachable, last = True, ""
        for attempt in range(self.retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                self._retrying(attempt, delay, last)
                if abort is not None and abort.wait(delay):
                    raise _Aborted()
                if abort is None:
                    time.sleep(delay)
            url = self.base_url + path + (f"?{self._query}" if self._query else "")
            request = urllib.request.Request(url, data=data, headers=headers,
                                             method="GET" if data is None else "POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read()
            except urllib.error.HTTPError as exc:  # before URLError: it is a subclass
                detail = self._scrub(_error_detail(exc))
                if exc.code == 429 or exc.code >= 500:
                    unreachable, last = False, f"HTTP {exc.code}: {detail}"
                    continue
                raise ClientError(f"HTTP {exc.code}: {detail}") from None
            except urllib.error.URLError as exc:
                reason = exc.reason
                unreachable, last = True, getattr(reason, "strerror", None) or str(reason)
                continue
            except TimeoutError:
                unreachable, last = True, f"no answer within {self.timeout:g} s"
                continue
            except (OSError, http.client.HTTPException) as exc:  # reset, closed early...
                unreachable, last = True, getattr(exc, "strerror", None) or str(exc) or repr(exc)
                continue
            try:
                return json.loads(body)
            except ValueError:
                raise CaiError(f"server {self.base_url} answered {path} with something that is "
                               "not JSON: is it an OpenAI-compatible server?") from None
        verb = "unreachable" if unreachable else "still failing"
        raise CaiError(f"server {self.base_url} {verb} after {self.retries} retries: "
                       f"{self._scrub(last)}")

    def _discover_model(self) -> str:
        try:
            listing = self._request("/models")
        except ClientError as exc:
            raise CaiError(f"server {self.base_url} refused to list its models ({exc}); "
                           "name the model explicitly") from None
        try:
            return str(listing["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise CaiError(f"server {self.base_url} lists no models at /models; "
                           "name the model explicitly") from None

    def _map(self, jobs: list[tuple[dict, Callable[[dict], object]]]) -> list:
        """POST each payload to /chat/completions, ``parallel`` at a time, and parse each
        answer; results come back in input order whatever order they finish in."""
        abort = threading.Event()

        def one(payload, parse):
            try:
                return parse(self._request("/chat/completions", payload, abort))
            except ClientError as exc:
                return ItemError(f"the server rejected the request: {exc}")
            except BaseException:
                abort.set()  # the server is gone: the other requests stop retrying
                raise

        futures = [self._pool.submit(one, payload, parse) for payload, parse in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException as exc:
            abort.set()
            for f in futures:
                f.cancel()
            if isinstance(exc, _Aborted):  # raise the error that made it stop instead
                for f in futures:
                    err = None if f.cancelled() else f.exception()
                    if err is not None and not isinstance(err, _Aborted):
                        raise err from None
            raise

    # ------------------------------------------------------------ Engine

    def generate(self, chats: Sequence[list[Message]], params: Sequence[SamplingParams]):
        return self._map([chat_payload(self.model_name, chat, p, self.reasoning) for chat, p in zip(chats, params)])

    def choice_logprobs(self, chats: Sequence[list[Message]], options: Sequence[Sequence[str]],
                        *, cue: str = ""):
        """Score each chat's options from the top_logprobs of one greedy completion.

        Unlike the llama.cpp engine, which prefills ``cue`` as the start of the assistant
        turn, the HTTP backend appends it to the last user message, on a new line (chat APIs
        cannot portably prefill the assistant turn), so the reply itself must start with an
        option for it to be found. See ``option_logprobs`` for how options are located.
        """
        return self._map([choice_payload(self.model_name, chat, opts, cue, self.reasoning)
                          for chat, opts in zip(chats, options)])

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- requests and parsing


def chat_payload(model: str, chat: list[Message], p: SamplingParams,
                 reasoning: str = "auto") -> tuple[dict, Callable[[dict], object]]:
    """A generation's /chat/completions request and the parser of its answer."""
    payload = {"model": model, "messages": list(chat), "max_tokens": p.max_tokens,
               "temperature": p.temperature, "top_p": p.top_p, "seed": p.seed}
    if p.top_k > 0:  # not OpenAI's, but llama.cpp and vLLM accept it
        payload["top_k"] = p.top_k
    if p.stop:
        payload["stop"] = list(p.stop)
    return _with_reasoning(payload, reasoning), _parse_generation


def choice_payload(model: str, chat: list[Message], options: Sequence[str],
                   cue: str, reasoning: str = "auto") -> tuple[dict, Callable[[dict], object]]:
    """A judgement's greedy one-token-ish request with top_logprobs, and its parser."""
    opts = list(options)
    payload = {"model": model, "messages": _with_cue(chat, cue),
               "max_tokens": max(4, max(map(len, opts), default=0) + 1),
               "temperature": 0.0, "seed": 0, "logprobs": True, "top_logprobs": TOP_LOGPROBS}
    # A judgement reads the first answer tokens: a thinking model must not think first.
    return _with_reasoning(payload, "off" if reasoning == "on" else reasoning), \
        lambda answer: _parse_choice(answer, opts)


def _with_reasoning(payload: dict, reasoning: str) -> dict:
    if reasoning in ("on", "off"):
        payload["chat_template_kwargs"] = {"enable_thinking": reasoning == "on"}
    return payload


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's own message from an error answer, on one line."""
    try:
        raw = exc.read().decode("utf-8", "replace")
    except Exception:
        raw = ""
    finally:
        exc.close()  # it holds the connection
    detail = raw
    try:
        body = json.loads(raw)
        err = body.get("error", body.get("detail", body.get("message")))
        detail = err.get("message", err) if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        pass
    detail = " ".join(str(detail or exc.reason or "").split())
    return detail[:500] or "no message"


def _parse_generation(answer: dict) -> Generation | ItemError:
    try:
        choice = answer["choices"][0]
        usage = answer.get("usage") or {}
        text = choice["message"]["content"]
        if not isinstance(text, str):  # null: a refusal field, a tool call, a broken server
            return ItemError("the server's answer has no text (message.content is "
                             f"{json.dumps(text)}): {json.dumps(answer)[:200]}")
        # Reasoning comes apart (llama-server's and vLLM's reasoning parsers) or in the text.
        text, inline = split_think_tags(text)
        parts = [p for p in (choice["message"].get("reasoning_content"), inline) if isinstance(p, str) and p.strip()]
        return Generation(text=text,
                          prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0),
                          finish_reason=choice.get("finish_reason") or "stop",
                          reasoning="\n".join(p.strip() for p in parts) or None)
    except (KeyError, IndexError, TypeError, AttributeError):
        return ItemError(f"unexpected answer from the server: {json.dumps(answer)[:200]}")


def _with_cue(chat: list[Message], cue: str) -> list[Message]:
    messages = [dict(m) for m in chat]
    if not cue:
        return messages
    for m in reversed(messages):
        if m.get("role") == "user":
            m["content"] = f"{m.get('content') or ''}\n{cue}"
            return messages
    return messages + [{"role": "user", "content": cue}]


def _parse_choice(answer: dict, options: list[str]) -> list[float] | ItemError:
    try:
        tokens = answer["choices"][0]["logprobs"]["content"]
    except (KeyError, IndexError, TypeError):
        tokens = None
    if not tokens:
        return ItemError("the server returned no logprobs (does it support 'logprobs' and "
                         "'top_logprobs' for chat completions?)")
    try:
        return option_logprobs(tokens, options)
    except (KeyError, TypeError, AttributeError):
        return ItemError(f"unexpected logprobs from the server: {json.dumps(tokens)[:200]}")


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def option_logprobs(tokens: list[dict], options: list[str]) -> list[float] | ItemError:
    """Log-probabilities for ``options`` from an OpenAI ``logprobs.content`` list.

    The reply is walked token by token while the sampled text (leading whitespace ignored)
    is still part of the options' common prefix, e.g. "(" of "(A)"/"(B)". At each such
    position, a listed token that, appended to that text, goes past the common prefix and
    agrees with an option ("A" after "(", or "(A", " (A", "(A)" at the start) adds
    exp(logprob of the path so far + its logprob) to that option; several ways to one option
    are summed. The path's logprob is shared by all options found at a position, so the
    softmax of the result is the options' normalised probabilities.

    An option absent from the top_logprobs at such a position is given a floor there: the
    lowest listed logprob minus log(2) (it is below every listed token; half the lowest is a
    middle-of-the-road guess that never outranks a listed option).
    """
    prefix = commonprefix(options)
    found: list[list[float]] = [[] for _ in options]
    said, path = "", 0.0  # text sampled so far (leading whitespace dropped), its logprob
    for position in tokens:
        listed = position.get("top_logprobs") or [position]
        hits: set[int] = set()
        for entry in listed:
            text = said + (entry["token"] if said else entry["token"].lstrip())
            if len(text) <= len(prefix):
                continue  # does not tell the options apart (yet)
            for k, option in enumerate(options):
                if option.startswith(text) or text.startswith(option):
                    found[k].append(path + entry["logprob"])
                    hits.add(k)
        if hits:
            floor = path + min(e["logprob"] for e in listed) - LOG2
            for k in set(range(len(options))) - hits:
                found[k].append(floor)
        # Follow the sampled token only while it stays inside the common prefix.
        sampled = said + (position["token"] if said else position["token"].lstrip())
        if not prefix.startswith(sampled):
            break
        said, path = sampled, path + position["logprob"]
    if not any(found):
        seen = " ".join(repr(t.get("token")) for t in tokens[:4])
        return ItemError(f"the server's top_logprobs contain none of the options "
                         f"{', '.join(options)} at the start of the reply (it began {seen})")
    return [_logsumexp(f) for f in found]
