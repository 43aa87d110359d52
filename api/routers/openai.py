"""OpenAI-compatible queries (/v1/models, /v1/chat/completions, /v1/completions), streamed as SSE on request."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from agent.service import Agent
from api.auth import Auth
from api.errors import APIError
from api.schemas import ChatCompletionIn, CompletionIn, Unsupported
from evaluation.closed_book import OPEN_BOOK
from serving.batching import PromptTooLong, QueueFull
from serving.server import ModelNotFound


def router(agent: Agent, auth: Auth) -> APIRouter:
    r = APIRouter()
    read = Depends(auth.require("read"))
    cfg = agent.cfg.service
    timeout = agent.cfg.serving.request_timeout_s

    async def _wait(req, http: Request | None):
        """The answer of an in-process request; a client that went away, or the server's time limit, takes the
        request out of its batch (504 for the limit) instead of decoding it to max_tokens for nobody."""
        fut = asyncio.wrap_future(req.future)
        start = time.monotonic()
        while True:
            done, _ = await asyncio.wait({fut}, timeout=0.2)
            if done:
                return fut.result()
            if http is not None and await http.is_disconnected():
                req.cancelled = True
                raise APIError(499, "client closed the request", code="client_closed")
            if timeout is not None and time.monotonic() - start > timeout:
                req.cancelled = True
                raise APIError(504, f"no answer within serving.request_timeout_s ({timeout:g} s)")

    @r.get("/v1/models", tags=["openai"], dependencies=[read])
    def models():
        return {"object": "list", "data": agent.server.models()}

    @r.get("/v1/models/{model:path}", tags=["openai"], dependencies=[read])
    def model(model: str):
        """One model object by any of its names (`client.models.retrieve`)."""
        for m in agent.server.models():
            if m["id"] == model:
                return m
        try:
            agent.server.resolve(model)
        except ModelNotFound as e:
            raise APIError(404, str(e), param="model", code="model_not_found")
        found = agent.server.model_object(model)
        return found

    def _limit(n: int | None, default: int) -> int:
        n = default if n is None else n
        if n > cfg.max_new_tokens:
            raise APIError(422, f"max_tokens {n} is over this server's limit {cfg.max_new_tokens}", param="max_tokens")
        return n

    async def _run(body, prompt: str, max_tokens: int, kind: str, route_text: str | None = None,
                   http: Request | None = None, recited=None):
        """In-process, the request joins the batcher's queue and this handler awaits it on the event loop (no
        thread held while the model is busy); with a vLLM backend the blocking client runs in the thread pool."""
        try:
            stops = body.stops()
        except ValueError as e:
            raise APIError(422, str(e), param="stop")
        in_process = agent.server.in_process
        try:  # the name is resolved, and its routing built, here: never on the batcher's thread under the lock
            await run_in_threadpool(agent.server.warm_routing, body.model)
        except ModelNotFound as e:
            raise APIError(404, str(e), param="model", code="model_not_found")
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        obj = "chat.completion" if kind == "chat" else "text_completion"
        # recite-then-read: the untouched model reads what the routed adapter recited (the reply still names the
        # version and the adapter that answered)
        model = "base" if recited is not None else body.model
        args = (model, prompt, max_tokens, body.temperature, body.top_p, stops, body.seed, route_text)
        loop = asyncio.get_running_loop()
        if body.stream:
            q: asyncio.Queue = asyncio.Queue()
            if in_process:
                req = _submit(*args, on_piece=lambda piece: loop.call_soon_threadsafe(q.put_nowait, piece))
                req.future.add_done_callback(lambda _f: loop.call_soon_threadsafe(q.put_nowait, None))
            else:
                pieces = await run_in_threadpool(agent.server.stream, *args)

            usage = body.stream_options is not None and body.stream_options.include_usage

            def chunk(delta: str | None, finish: str | None, **extra) -> str:
                if kind == "chat":
                    choice = {"index": 0, "delta": {} if delta is None else {"content": delta},
                              "finish_reason": finish}
                else:
                    choice = {"index": 0, "text": delta or "", "finish_reason": finish}
                return event([choice], **extra)

            def event(choices: list, **extra) -> str:
                # with include_usage, every chunk carries "usage": null and one last chunk the counts
                more = {"usage": None} if usage else {}
                return "data: " + json.dumps({"id": rid, "object": obj + ".chunk", "created": created,
                                              "model": body.model, "choices": choices, **more, **extra}) + "\n\n"

            async def sse():
                try:
                    if kind == "chat":
                        yield event([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}])
                    finish, text, last = "stop", [], {}
                    if in_process:
                        while (piece := await q.get()) is not None:
                            yield chunk(piece, None)
                        fin = req.future.result()
                        finish, counts = fin.finish_reason, (fin.prompt_tokens, fin.completion_tokens)
                        # the last chunk names the version that answered (known once the batch has run)
                        last = {"system_fingerprint": recited.version if recited is not None
                                else agent.server.generation(req, fin).model}
                    else:
                        async for piece in iterate_in_threadpool(pieces):
                            text.append(piece)
                            yield chunk(piece, None)
                        counts = (agent.server.count_tokens(prompt), agent.server.count_tokens("".join(text)))
                    yield chunk(None, finish, **last)
                    if usage:
                        yield event([], usage={"prompt_tokens": counts[0], "completion_tokens": counts[1],
                                               "total_tokens": sum(counts)})
                    yield "data: [DONE]\n\n"
                finally:
                    if in_process:
                        req.cancelled = True  # a client that went away leaves its batch

            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        if in_process:
            req = _submit(*args)
            g = agent.server.generation(req, await _wait(req, http))
        else:
            try:
                g = await asyncio.wait_for(run_in_threadpool(agent.server.generate, *args), timeout)
            except asyncio.TimeoutError:
                raise APIError(504, f"no answer within serving.request_timeout_s ({timeout:g} s)")
        choice = ({"index": 0, "message": {"role": "assistant", "content": g.text}, "finish_reason": g.finish_reason}
                  if kind == "chat" else {"index": 0, "text": g.text, "finish_reason": g.finish_reason,
                                          "logprobs": None})
        extra = {} if g.adapters is None else {"seal_adapters": list(g.adapters)}  # routed: which adapters answered
        fingerprint = g.model
        if recited is not None:
            extra, fingerprint = {"seal_adapters": [recited.adapter], "seal_answer": "recite"}, recited.version
        return {"id": rid, "object": obj, "created": created, "model": body.model, "system_fingerprint": fingerprint,
                **extra,
                "choices": [choice], "usage": {"prompt_tokens": g.prompt_tokens,
                                               "completion_tokens": g.completion_tokens,
                                               "total_tokens": g.prompt_tokens + g.completion_tokens}}

    def _submit(*args, on_piece=None):
        try:
            return agent.server.submit(*args, on_piece=on_piece)
        except QueueFull as e:
            raise APIError(503, str(e), code="queue_full", headers={"Retry-After": "1"})
        except ModelNotFound as e:
            raise APIError(404, str(e), param="model", code="model_not_found")
        except PromptTooLong as e:
            raise APIError(400, str(e), param="messages" if args[-1] is not None else "prompt",
                           code="context_length_exceeded")

    @r.post("/v1/chat/completions", tags=["openai"], dependencies=[read])
    async def chat_completions(body: ChatCompletionIn, http: Request):
        try:
            body.unsupported()
            messages = [m.rendered(i) for i, m in enumerate(body.messages)]
        except Unsupported as e:
            raise APIError(400, str(e), param=e.param, code=e.code)
        n = _limit(body.max_completion_tokens or body.max_tokens, 128)
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        recited = None
        if users and agent.server.reciting:
            try:
                recited = await run_in_threadpool(agent.server.recitation, body.model, messages[users[-1]]["content"])
            except ModelNotFound as e:
                raise APIError(404, str(e), param="model", code="model_not_found")
        if recited is not None:
            q = messages[users[-1]]["content"]
            messages = [*messages[:users[-1]], {"role": "user", "content": OPEN_BOOK.format(context=recited.text, q=q)},
                        *messages[users[-1] + 1:]]
        prompt = agent.server.render_chat(messages)
        route = messages[users[-1]]["content"] if users else prompt
        if recited is not None:
            return await _run(body, prompt, n, "chat", None, http, recited=recited)
        return await _run(body, prompt, n, "chat", route, http)  # routed by the question

    @r.post("/v1/completions", tags=["openai"], dependencies=[read])
    async def completions(body: CompletionIn, http: Request):
        try:
            body.unsupported()
        except Unsupported as e:
            raise APIError(400, str(e), param=e.param, code=e.code)
        return await _run(body, body.prompt, _limit(body.max_tokens, 16), "text", http=http)

    return r
