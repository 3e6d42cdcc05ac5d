"""An instant OpenAI-compatible chat server on loopback, for tests and load checks that need a real endpoint.

`OpenAIStub` answers ``POST /v1/chat/completions`` (plain or streamed) in well under a millisecond:

- a request with ``response_format`` ``json_schema`` gets JSON content that satisfies the schema;
  ``json_object`` gets a JSON verdict-and-persona object;
- a request with ``tools`` gets one tool call to the chosen tool, with arguments that satisfy
  its parameter schema;
- anything else (a draft) gets text built from the last user message and the choice index.

Enum fields (a judge's ``"First"``/``"Second"``) are picked by a hash of the prompt, so answers are
deterministic but not all the same. Faults can be injected for reliability tests: `error_rate`
(HTTP 500), `malformed_rate` (structured answers that are not valid JSON) and `delay_s`; and
`rate_limit_rate` (HTTP 429 with ``Retry-After: 0``), `timeout_rate` (the answer comes only after
`hang_s`, past a short client timeout), `empty_choices_rate` (HTTP 200 with ``"choices": []``)
and `bad_verdict_rate` (structured answers whose enum fields, such as the judge's choice, hold a
value outside the enum, e.g. ``"Third"``). Each fault is drawn independently per request from
the seeded generator, in that order after `error_rate`. Every request is counted by kind in
`counts`; each injected fault under ``fault.<kind>``. Run ``python -m devtools.openai_stub --port N`` to
serve one by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PERSONA_TEXT = (
    "The user prefers concise, concrete answers that lead with the direct answer, "
    "give one worked example, and avoid filler."
)


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        node: Any = root
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def instance_of(
    schema: dict[str, Any], *, seed: int, key: str = "", root: dict[str, Any] | None = None
) -> Any:
    """Return a value that satisfies a JSON schema (the subset pydantic and OpenAI tools use)."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][seed % len(schema["enum"])]
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            options = [s for s in schema[combinator] if _resolve(s, root).get("type") != "null"]
            return instance_of((options or schema[combinator])[0], seed=seed, key=key, root=root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {
            name: instance_of(sub, seed=seed + index, key=name, root=root)
            for index, (name, sub) in enumerate(properties.items())
        }
    if kind == "array":
        count = max(int(schema.get("minItems", 0)), 0)
        return [instance_of(schema.get("items", {}), seed=seed + i, key=key, root=root) for i in range(count)]
    if kind == "boolean":
        return seed % 2 == 0
    if kind in ("number", "integer"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 1))
        exclusive = "exclusiveMinimum" in schema or "exclusiveMaximum" in schema
        value = (low + high) / 2 if exclusive else low + (high - low) * ((seed % 100) / 100)
        return round(value) if kind == "integer" else float(value)
    if kind == "string":
        if "persona" in key.lower():
            return PERSONA_TEXT
        text = f"stub {key or 'text'}: the reply that fits the stated preferences better."
        limit = schema.get("maxLength")
        return text[:limit] if isinstance(limit, int) else text
    return None


def _outside_enums(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """Replace every enum-valued string in `value` by one the schema does not allow ("Third")."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if "enum" in schema and all(isinstance(option, str) for option in schema["enum"]):
        return next(word for word in ("Third", "Both", "Neither") if word not in schema["enum"])
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {
            key: _outside_enums(item, properties[key], root) if key in properties else item
            for key, item in value.items()
        }
    return value


def _json_object(seed: int) -> dict[str, Any]:
    return {
        "reasoning": "stub reasoning: the first reply is more direct.",
        "choice": ("First", "Second")[seed % 2],
        "persona": PERSONA_TEXT,
    }


class OpenAIStub:
    """An OpenAI-compatible chat completions server on 127.0.0.1, in a background thread."""

    def __init__(
        self,
        *,
        port: int = 0,
        error_rate: float = 0.0,
        malformed_rate: float = 0.0,
        delay_s: float = 0.0,
        seed: int = 0,
        rate_limit_rate: float = 0.0,
        timeout_rate: float = 0.0,
        hang_s: float = 2.0,
        empty_choices_rate: float = 0.0,
        bad_verdict_rate: float = 0.0,
    ) -> None:
        self.error_rate = error_rate
        self.malformed_rate = malformed_rate
        self.delay_s = delay_s
        self.rate_limit_rate = rate_limit_rate
        self.timeout_rate = timeout_rate
        self.hang_s = hang_s
        self.empty_choices_rate = empty_choices_rate
        self.bad_verdict_rate = bad_verdict_rate
        self.counts: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port the stub listens on."""
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to configure (``OPENAI_BASE_URL``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIStub:
        """Start serving in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _roll(self, rate: float) -> bool:
        with self._lock:
            return rate > 0 and self._random.random() < rate

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    # --- answers --------------------------------------------------------------------------------
    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Return the HTTP status and the (non-streamed) completion for a request body."""
        messages = request.get("messages") or []
        prompt = json.dumps(messages, ensure_ascii=False, sort_keys=True)
        seed = _digest(prompt)
        if self._roll(self.error_rate):
            self._count("error")
            return 500, {"error": {"message": "injected failure", "type": "server_error", "code": None}}
        if self._roll(self.rate_limit_rate):
            self._count("fault.rate_limit")
            return 429, {"error": {"message": "injected rate limit", "type": "rate_limit", "code": None}}
        if self._roll(self.empty_choices_rate):
            self._count("fault.empty_choices")
            return 200, self._completion(request, prompt, [])
        malformed = self._roll(self.malformed_rate)
        if malformed:
            self._count("fault.malformed")
        bad_verdict = not malformed and self._roll(self.bad_verdict_rate)
        response_format = request.get("response_format") or {}
        tools = request.get("tools") or []
        choices = []
        for index in range(int(request.get("n") or 1)):
            message: dict[str, Any] = {"role": "assistant", "content": None}
            if tools:
                kind = "tool"
                tool = self._chosen_tool(tools, request.get("tool_choice"))
                arguments = instance_of(tool.get("parameters") or {}, seed=seed + index)
                if bad_verdict:
                    arguments = _outside_enums(arguments, tool.get("parameters") or {})
                message["tool_calls"] = [
                    {
                        "id": f"call_{uuid.uuid4().hex[:12]}",
                        "type": "function",
                        "function": {
                            "name": tool["name"],
                            "arguments": "{not json" if malformed else json.dumps(arguments),
                        },
                    }
                ]
                finish = "tool_calls"
            elif response_format.get("type") == "json_schema":
                kind = "json_schema"
                schema = (response_format.get("json_schema") or {}).get("schema") or {}
                content = instance_of(schema, seed=seed + index)
                if bad_verdict:
                    content = _outside_enums(content, schema)
                message["content"] = "{not json" if malformed else json.dumps(content)
                finish = "stop"
            elif response_format.get("type") == "json_object":
                kind = "json_object"
                answer = _json_object(seed + index)
                if bad_verdict:
                    answer["choice"] = "Third"
                message["content"] = "{not json" if malformed else json.dumps(answer)
                finish = "stop"
            else:
                kind = "text"
                message["content"] = self._draft(messages, seed + index)
                finish = "stop"
            self._count(kind)
            choices.append({"index": index, "message": message, "finish_reason": finish, "logprobs": None})
        if bad_verdict and kind != "text":
            self._count("fault.bad_verdict")
        return 200, self._completion(request, prompt, choices)

    @staticmethod
    def _completion(request: dict[str, Any], prompt: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        prompt_tokens = max(1, len(prompt) // 4)
        completion_tokens = sum(max(1, len(json.dumps(choice["message"])) // 4) for choice in choices)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "stub"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    @staticmethod
    def _chosen_tool(tools: list[dict[str, Any]], tool_choice: Any) -> dict[str, Any]:
        functions = [tool.get("function", tool) for tool in tools]
        if isinstance(tool_choice, dict):
            wanted = (tool_choice.get("function") or {}).get("name")
            for function in functions:
                if function.get("name") == wanted:
                    return function
        return functions[0]

    @staticmethod
    def _draft(messages: list[dict[str, Any]], seed: int) -> str:
        """Return a reply to the last user message; different prompts (style hints) get different replies."""
        question = next(
            (str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "your question"
        )
        styles = ("Short answer", "Step by step", "With an example", "In detail")
        return (
            f"{styles[seed % len(styles)]} (draft {seed % 100_000}): here is a reply to {question[:200]!r}."
        )

    @staticmethod
    def chunks(completion: dict[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
        """Split a completion into the streamed chunks OpenAI would send."""
        base = {key: completion[key] for key in ("id", "created", "model")}
        base["object"] = "chat.completion.chunk"
        out = []
        for choice in completion["choices"]:
            message = choice["message"]
            delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
            if message.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            out.append(
                {**base, "choices": [{"index": choice["index"], "delta": delta, "finish_reason": None}]}
            )
            out.append(
                {
                    **base,
                    "choices": [
                        {"index": choice["index"], "delta": {}, "finish_reason": choice["finish_reason"]}
                    ],
                }
            )
        if include_usage:
            out.append({**base, "choices": [], "usage": completion["usage"]})
        return out

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle's algorithm the body would wait
            # for the client's delayed ACK of the headers, ~40 ms a request on Linux.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

            def _send_json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send_json(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
                else:
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    request = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send_json(400, {"error": {"message": "body is not JSON"}})
                    return
                if stub.delay_s:
                    time.sleep(stub.delay_s)
                if stub._roll(stub.timeout_rate):
                    stub._count("fault.timeout")
                    time.sleep(stub.hang_s)  # the client has given up by now: hang up without a reply
                    self.close_connection = True
                    return
                status, completion = stub.answer(request)
                if status != 200 or not request.get("stream"):
                    self._send_json(status, completion)
                    return
                include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
                payload = b"".join(
                    f"data: {json.dumps(chunk)}\n\n".encode()
                    for chunk in stub.chunks(completion, include_usage=include_usage)
                )
                payload += b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def main() -> None:
    """Serve a stub until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    parser.add_argument("--delay-s", type=float, default=0.0)
    args = parser.parse_args()
    stub = OpenAIStub(
        port=args.port, error_rate=args.error_rate, malformed_rate=args.malformed_rate, delay_s=args.delay_s
    )
    print(stub.base_url, flush=True)
    try:
        stub._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stub._server.server_close()


if __name__ == "__main__":
    main()
