"""OpenAI-compatible queries (/v1/models, /v1/chat/completions, /v1/completions), streamed as SSE on request."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from agent.service import Agent
from api.auth import Auth
from api.schemas import ChatCompletionIn, CompletionIn
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
                raise HTTPException(499, "client closed the request")
            if timeout is not None and time.monotonic() - start > timeout:
                req.cancelled = True
                raise HTTPException(504, f"no answer within serving.request_timeout_s ({timeout:g} s)")

    @r.get("/v1/models", tags=["openai"], dependencies=[read])
    def models():
        return {"object": "list", "data": agent.server.models()}

    def _limit(n: int | None, default: int) -> int:
        n = default if n is None else n
        if n > cfg.max_new_tokens:
            raise HTTPException(422, f"max_tokens {n} is over this server's limit {cfg.max_new_tokens}")
        return n

    async def _run(body, prompt: str, max_tokens: int, kind: str, route_text: str | None = None,
                   http: Request | None = None):
        """In-process, the request joins the batcher's queue and this handler awaits it on the event loop (no
        thread held while the model is busy); with a vLLM backend the blocking client runs in the thread pool."""
        try:
            stops = body.stops()
        except ValueError as e:
            raise HTTPException(422, str(e))
        in_process = agent.server.in_process
        if not in_process:  # in-process, submit() resolves the name (once) and _submit answers 404
            try:
                agent.server.resolve(body.model)
            except ModelNotFound as e:
                raise HTTPException(404, str(e))
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        obj = "chat.completion" if kind == "chat" else "text_completion"
        args = (body.model, prompt, max_tokens, body.temperature, body.top_p, stops, body.seed, route_text)
        loop = asyncio.get_running_loop()
        if body.stream:
            q: asyncio.Queue = asyncio.Queue()
            if in_process:
                req = _submit(*args, on_piece=lambda piece: loop.call_soon_threadsafe(q.put_nowait, piece))
                req.future.add_done_callback(lambda _f: loop.call_soon_threadsafe(q.put_nowait, None))
            else:
                pieces = await run_in_threadpool(agent.server.stream, *args)

            def chunk(delta: str | None, finish: str | None) -> str:
                if kind == "chat":
                    choice = {"index": 0, "delta": {} if delta is None else {"content": delta},
                              "finish_reason": finish}
                else:
                    choice = {"index": 0, "text": delta or "", "finish_reason": finish}
                return "data: " + json.dumps({"id": rid, "object": obj + ".chunk", "created": created,
                                              "model": body.model, "choices": [choice]}) + "\n\n"

            async def sse():
                try:
                    if kind == "chat":
                        yield "data: " + json.dumps({"id": rid, "object": obj + ".chunk", "created": created,
                                                     "model": body.model, "choices": [{"index": 0, "delta": {
                                                         "role": "assistant"}, "finish_reason": None}]}) + "\n\n"
                    finish = "stop"
                    if in_process:
                        while (piece := await q.get()) is not None:
                            yield chunk(piece, None)
                        finish = req.future.result().finish_reason
                    else:
                        async for piece in iterate_in_threadpool(pieces):
                            yield chunk(piece, None)
                    yield chunk(None, finish)
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
                raise HTTPException(504, f"no answer within serving.request_timeout_s ({timeout:g} s)")
        choice = ({"index": 0, "message": {"role": "assistant", "content": g.text}, "finish_reason": g.finish_reason}
                  if kind == "chat" else {"index": 0, "text": g.text, "finish_reason": g.finish_reason,
                                          "logprobs": None})
        extra = {} if g.adapters is None else {"seal_adapters": list(g.adapters)}  # routed: which adapters answered
        return {"id": rid, "object": obj, "created": created, "model": body.model, "system_fingerprint": g.model,
                **extra,
                "choices": [choice], "usage": {"prompt_tokens": g.prompt_tokens,
                                               "completion_tokens": g.completion_tokens,
                                               "total_tokens": g.prompt_tokens + g.completion_tokens}}

    def _submit(*args, on_piece=None):
        try:
            return agent.server.submit(*args, on_piece=on_piece)
        except QueueFull as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "1"})
        except ModelNotFound as e:
            raise HTTPException(404, str(e))
        except PromptTooLong as e:
            raise HTTPException(400, str(e))

    @r.post("/v1/chat/completions", tags=["openai"], dependencies=[read])
    async def chat_completions(body: ChatCompletionIn, http: Request):
        n = _limit(body.max_completion_tokens or body.max_tokens, 128)
        prompt = agent.server.render_chat([m.model_dump() for m in body.messages])
        users = [m.content for m in body.messages if m.role == "user"]
        return await _run(body, prompt, n, "chat", users[-1] if users else prompt, http)  # routed by the question

    @r.post("/v1/completions", tags=["openai"], dependencies=[read])
    async def completions(body: CompletionIn, http: Request):
        return await _run(body, body.prompt, _limit(body.max_tokens, 16), "text", http=http)

    return r
