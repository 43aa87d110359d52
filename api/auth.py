"""Bearer API keys with two scopes: `read` (query, inspect) and `write` (submit, cancel, promote; implies read)."""
from __future__ import annotations

import os

from fastapi import HTTPException, Request

SCOPES = ("read", "write")


class KeyFormatError(ValueError):
    pass


def parse_keys(text: str) -> dict[str, str]:
    """`key:scope,key:scope` (SEAL_API_KEYS)."""
    keys = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        key, sep, scope = item.rpartition(":")
        if not sep or not key or scope not in SCOPES:
            raise KeyFormatError(f"SEAL_API_KEYS entry {item!r}: expected key:scope with scope read or write")
        if len(key) < 8:
            raise KeyFormatError("API keys must be at least 8 characters")
        keys[key] = scope
    return keys


def load_keys(configured: dict[str, str], env: dict | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    return dict(configured) | parse_keys(env.get("SEAL_API_KEYS", ""))


class Auth:
    def __init__(self, keys: dict[str, str]):
        self.keys = keys

    def require(self, scope: str):
        def check(request: Request) -> str:
            header = request.headers.get("authorization", "")
            kind, _, token = header.partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'",
                                    headers={"WWW-Authenticate": "Bearer"})
            have = self.keys.get(token.strip())
            if have is None:
                raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
            if scope == "write" and have != "write":
                raise HTTPException(403, f"this key has scope {have!r}; this endpoint needs 'write'")
            return have

        return check
