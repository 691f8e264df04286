"""Several OpenAI-compatible servers as one engine (``--server URL`` repeated, or a file of URLs).

Generation is most of a CAI replication's cost, and the usual way to scale it is more
inference processes: llama-server or vLLM instances on one or more hosts. Each request goes to
the live server with the fewest requests in flight (relative to ``--parallel``, the requests
each server is sent at once). A server that stays unreachable after its own short retries is
taken out with a warning, the request goes to another, and the dead one is tried again after
``retry_after`` seconds; the run finishes on the rest and fails only when every server is down.
Every request carries its own seed, so on deterministic servers the answers do not depend on
which server gave them. On close, each server's share and the aggregate throughput go to stderr.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from ..errors import CaiError
from .base import EngineInfo, ItemError, Message, SamplingParams
from .openai_http_engine import ClientError, OpenAIHttpEngine, chat_payload, choice_payload

RETRY_AFTER_S = 30.0


class _Server:
    def __init__(self, engine: OpenAIHttpEngine):
        self.engine = engine
        self.in_flight = self.requests = self.failures = 0
        self.down_until = 0.0   # monotonic time before which it is not sent requests
        self.last_error = ""


class MultiServerEngine:
    """One engine over several servers serving the same model."""

    def __init__(self, urls: list[str], model_name: str | None = None, *, parallel: int = 4,
                 note: Callable[[str], None] = lambda message: None, retries: int = 1, backoff: float = 0.5,
                 timeout: float = 120.0, retry_after: float = RETRY_AFTER_S, reasoning: str = "auto"):
        self.note, self.retry_after, self.parallel = note, retry_after, max(1, int(parallel))
        # The model's name from the first server that answers, unless named; the others are not
        # contacted here (a down server is found out, and retried, when requests go to it).
        if model_name is None:
            errors = []
            for url in urls:
                try:
                    probe = OpenAIHttpEngine(url, None, parallel=1, retries=0, timeout=timeout, note=note)
                    model_name = probe.model_name
                    probe.close()
                    break
                except CaiError as exc:
                    errors.append(str(exc))
            else:
                raise CaiError("every server is down: " + "; ".join(errors))
        self.model_name, self.reasoning = model_name, reasoning
        self.servers = [_Server(OpenAIHttpEngine(url, model_name, parallel=1, retries=retries, backoff=backoff,
                                                 timeout=timeout, note=note)) for url in urls]
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)   # signalled when a request finishes
        self._pool = ThreadPoolExecutor(max_workers=self.parallel * len(urls), thread_name_prefix="cai-servers")
        self._started = time.monotonic()
        self.info = EngineInfo(backend="openai-http", model=model_name, fingerprint=None,
                               options={"base_urls": [s.engine.base_url for s in self.servers],
                                        "parallel": self.parallel})

    # ------------------------------------------------------------ dispatch

    def _pick(self) -> _Server | None:
        """The live server with the least load, counted in (waiting while every live one has
        --parallel requests in flight: a server's share never grows past that when another is
        down); None when every one is down."""
        with self._free:
            while True:
                now = time.monotonic()
                live = [s for s in self.servers if s.down_until <= now]
                if not live:
                    return None
                server = min(live, key=lambda s: (s.in_flight, s.requests))
                if server.in_flight < self.parallel:
                    server.in_flight += 1
                    return server
                self._free.wait(timeout=1.0)

    def _send(self, path: str, payload: dict, parse):
        while True:
            server = self._pick()
            if server is None:
                raise CaiError("every server is down: " + "; ".join(
                    f"{s.engine.base_url} ({s.last_error})" for s in self.servers))
            try:
                answer = server.engine._request(path, payload)
            except ClientError as exc:
                return ItemError(f"the server rejected the request: {exc}")
            except CaiError as exc:
                with self._lock:
                    server.failures += 1
                    server.last_error = str(exc)
                    first = server.down_until <= time.monotonic()
                    server.down_until = time.monotonic() + self.retry_after
                if first:
                    self.note(f"warning: {server.engine.base_url} is down ({exc}); its requests go to the "
                              f"other servers, and it is tried again in {self.retry_after:g} s")
                continue
            finally:
                with self._free:
                    server.in_flight -= 1
                    self._free.notify()
            with self._lock:
                server.requests += 1
            return parse(answer)

    def _map(self, jobs: list[tuple[dict, Callable[[dict], object]]]) -> list:
        futures = [self._pool.submit(self._send, "/chat/completions", payload, parse) for payload, parse in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    # ------------------------------------------------------------ Engine

    def generate(self, chats: Sequence[list[Message]], params: Sequence[SamplingParams]):
        return self._map([chat_payload(self.model_name, chat, p, self.reasoning) for chat, p in zip(chats, params)])

    def choice_logprobs(self, chats: Sequence[list[Message]], options: Sequence[Sequence[str]], *, cue: str = ""):
        return self._map([choice_payload(self.model_name, chat, opts, cue, self.reasoning)
                          for chat, opts in zip(chats, options)])

    def report(self) -> str:
        """Each server's share and the aggregate rate since the engine opened."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        total = sum(s.requests for s in self.servers)
        shares = ", ".join(f"{s.engine.base_url} {s.requests}" + (f" (down {s.failures}x)" if s.failures else "")
                           for s in self.servers)
        return f"{total} requests over {len(self.servers)} servers in {elapsed:.1f} s " \
               f"({60 * total / elapsed:.1f}/min): {shares}"

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for s in self.servers:
            s.engine.close()
        if any(s.requests for s in self.servers):
            self.note(self.report())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
