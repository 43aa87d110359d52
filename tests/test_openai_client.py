"""The OpenAI API as clients really send it, with the official `openai` client against a real `seal serve` process
(tiny model): content parts, usage in streams, models.retrieve, refused parameters, the error object, and every
printed name accepted everywhere."""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ROOT
from tests.test_service_cli import _free_port, _until

SEAL = str(Path(sys.executable).parent / "seal")
WRITE, READ = "openai-write-key-1", "openai-read-key-01"
DOC = {"title": "Zorblax", "context": "The Zorblax river flows into the Quimby sea near Frell.",
       "questions": [{"question": "Where does the Zorblax flow?", "answer": "Quimby sea"}]}


@pytest.fixture(scope="module")
def server(tiny_cfg, tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    cfg = tiny_cfg.with_overrides(
        continual={**tiny_cfg.continual.model_dump(), "train_on": "passage", "state_dir": str(root / "state")},
        service={**tiny_cfg.service.model_dump(), "max_request_bytes": 65536},
        runtime={"threads": 1}, runs_dir=str(root / "runs"))
    cfg_path = root / "svc.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump()))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen([SEAL, "serve", "-c", str(cfg_path), "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "SEAL_API_KEYS": f"{WRITE}:write,{READ}:read"})
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {WRITE}"}, timeout=120)
    try:
        _until(lambda: http.get("/healthz").status_code == 200, 120, "the service")
        job = http.post("/v1/documents", json=DOC).json()["jobs"][0]["id"]
        _until(lambda: http.get(f"/v1/jobs/{job}").json()["state"] in ("promoted", "rejected", "failed"), 300,
               lambda: (root / "serve.log").read_text()[-2000:])
        assert http.get(f"/v1/jobs/{job}").json()["state"] == "promoted"
        yield url, http, cfg_path
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _client(url, key=READ):
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


MSG = [{"role": "user", "content": "Where does the Zorblax flow?"}]


def test_content_parts_stream_usage_and_models_retrieve(server):
    url, _, _ = server
    client = _client(url)
    plain = client.chat.completions.create(model="seal-student@prod", messages=MSG, max_tokens=6)
    parts = client.chat.completions.create(
        model="seal-student@prod", max_tokens=6,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Where does the Zorblax flow?"}]}])
    assert parts.choices[0].message.content == plain.choices[0].message.content  # the same prompt, read the same
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens

    chunks = list(client.chat.completions.create(model="seal-student@prod", messages=MSG, max_tokens=6, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    no_usage = list(client.chat.completions.create(model="base", messages=MSG, max_tokens=3, stream=True))
    assert all(c.usage is None for c in no_usage)

    listed = {m.id: m for m in client.models.list()}
    assert all(isinstance(m.created, int) for m in listed.values())
    assert listed["seal-student-v1"].created > 1_700_000_000
    for name in ("base", "seal-student@prod", "seal-student-v1", "student-v1"):
        assert client.models.retrieve(name).id == name
    from openai import NotFoundError

    with pytest.raises(NotFoundError) as e:
        client.models.retrieve("seal-student-v99")
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"


@pytest.mark.parametrize("param,value", [
    ("logprobs", True), ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("frequency_penalty", 0.5), ("presence_penalty", 1.0), ("logit_bias", {"1": 5}),
    ("response_format", {"type": "json_object"}),
])
def test_a_parameter_that_would_change_the_answer_is_refused_by_name(server, param, value):
    from openai import BadRequestError

    url, _, _ = server
    client = _client(url)
    with pytest.raises(BadRequestError) as e:
        client.chat.completions.create(model="base", messages=MSG, max_tokens=3, **{param: value})
    assert e.value.body["param"] == param and e.value.body["code"] == "unsupported_parameter"
    assert param in e.value.body["message"]


def test_neutral_values_of_unsupported_parameters_are_accepted(server):
    url, _, _ = server
    out = _client(url).chat.completions.create(model="base", messages=MSG, max_tokens=3, logprobs=False,
                                               frequency_penalty=0, presence_penalty=0.0, logit_bias={},
                                               response_format={"type": "text"}, user="someone")
    assert out.choices[0].finish_reason in ("stop", "length")


def test_every_error_is_the_openai_error_object(server):
    import openai

    url, http, _ = server
    client = _client(url)
    cases = [
        (openai.BadRequestError, 400, dict(model="base", max_tokens=3, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}])),
        (openai.AuthenticationError, 401, None),
        (openai.NotFoundError, 404, dict(model="seal-student-v404", messages=MSG)),
        (openai.APIStatusError, 413, dict(model="base", messages=[{"role": "user", "content": "x" * 70_000}])),
        (openai.UnprocessableEntityError, 422, dict(model="base", messages=MSG, temperature=5)),
    ]
    for exc, status, kwargs in cases:
        with pytest.raises(exc) as e:
            if kwargs is None:
                _client(url, key="not-a-key-000").chat.completions.create(model="base", messages=MSG)
            else:
                client.chat.completions.create(**kwargs)
        assert e.value.status_code == status
        body = e.value.body
        assert set(body) >= {"message", "type", "param", "code"}, (status, body)
        assert body["code"] is None or isinstance(body["code"], str), (status, body)
        assert body["type"] == {401: "authentication_error", 404: "not_found_error"}.get(
            status, "invalid_request_error"), (status, body)
    # the other routes answer in the same shape
    r = http.post("/v1/adapters/student-v77/promote")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error" and r.json()["detail"]
    r = httpx.post(f"{url}/v1/documents", json=DOC, headers={"Authorization": f"Bearer {READ}"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    r = http.post("/v1/chat/completions", json={"model": "base", "messages": [{"role": "robot", "content": "x"}]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "messages.0.role", r.text


def test_every_printed_name_is_accepted_by_chat_promote_and_rollback(server):
    url, http, cfg_path = server
    names = set()
    names |= {m["id"] for m in http.get("/v1/models").json()["data"] if m["id"] != "base"}
    listing = http.get("/v1/adapters").json()
    names |= {v["name"] for v in listing["versions"]} | set(listing["aliases"])
    r = subprocess.run([SEAL, "status", "--url", url, "--api-key", WRITE, "-c", str(cfg_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    printed = set(re.findall(r"\bstudent-v\d+\b", r.stdout)) | set(re.findall(r"(\w+) -> student-v", r.stdout))
    r = subprocess.run([SEAL, "adapters", "-c", str(cfg_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    printed |= set(re.findall(r"\bstudent-v\d+\b", r.stdout))
    assert "student-v1" in printed and "prod" in printed, r.stdout
    names |= printed
    assert {"student-v1", "seal-student-v1", "seal-student@prod", "prod"} <= names, names
    for name in sorted(names):
        r = http.post("/v1/chat/completions", json={"model": name, "messages": MSG, "max_tokens": 2})
        assert r.status_code == 200, (name, r.text)
        r = http.post(f"/v1/adapters/{name}/promote", json={"alias": "prod"})
        assert r.status_code == 200 and r.json()["version"] == 1, (name, r.text)
        r = http.post("/v1/adapters/rollback", json={"to": name})
        assert r.status_code == 200 and r.json()["version"] == 1, (name, r.text)


def test_cli_jobs_documents_cancel_and_rollback_against_the_server(server):
    url, http, cfg_path = server
    env = {**os.environ, "SEAL_API_KEYS": f"{WRITE}:write"}

    def seal(*args):
        return subprocess.run([SEAL, *args, "--url", url, "-c", str(cfg_path)], capture_output=True, text=True,
                              timeout=120, env=env)

    job = http.get("/v1/jobs").json()["jobs"][-1]
    r = seal("jobs", "--state", "promoted")
    assert r.returncode == 0 and job["id"] in r.stdout and "promoted" in r.stdout, r.stderr
    r = seal("documents")
    assert r.returncode == 0 and "Zorblax" in r.stdout and "student-v1" in r.stdout, r.stderr
    r = seal("cancel", job["id"])  # finished: refused, one line
    assert r.returncode == 2 and "409" in r.stderr and "already" in r.stderr
    r = seal("rollback", "--to", "student-v1")
    assert r.returncode == 0 and "prod -> student-v1" in r.stdout, r.stderr
    r = seal("jobs", "--state", "bogus")
    assert r.returncode == 2 and "422" in r.stderr
