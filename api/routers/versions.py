"""The version stack: list, promote, roll back."""
from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from agent.service import Agent, NothingToRollBack
from api.auth import Auth
from api.schemas import PromoteIn, RollbackIn, json_safe
from student.stack import StackError


def router(agent: Agent, auth: Auth) -> APIRouter:
    r = APIRouter()
    read, write = Depends(auth.require("read")), Depends(auth.require("write"))


    @r.get("/v1/adapters", tags=["versions"], dependencies=[read])
    def adapters():
        return json_safe(agent.versions())

    @r.post("/v1/adapters/{version}/promote", tags=["versions"], dependencies=[write])
    def promote(version: str, body: PromoteIn | None = None):
        try:
            return agent.promote(version, (body or PromoteIn()).alias)
        except StackError as e:
            raise HTTPException(404, str(e))

    @r.post("/v1/adapters/rollback", tags=["versions"], dependencies=[write])
    def rollback(body: RollbackIn | None = None):
        try:
            return agent.rollback((body or RollbackIn()).to)
        except NothingToRollBack as e:
            raise HTTPException(409, str(e))
        except StackError as e:
            raise HTTPException(404, str(e))

    return r
