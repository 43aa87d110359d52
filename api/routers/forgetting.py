"""The forgetting ledger as JSON and as a plot."""
from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from agent.service import Agent
from api.auth import Auth
from api.schemas import json_safe
from core.extras import MissingExtra


def router(agent: Agent, auth: Auth) -> APIRouter:
    r = APIRouter()
    read = Depends(auth.require("read"))

    @r.get("/v1/forgetting", tags=["forgetting"], dependencies=[read])
    def forgetting():
        return json_safe(agent.forgetting())

    @r.get("/v1/forgetting/plot.png", tags=["forgetting"], dependencies=[read])
    def forgetting_plot():
        from agent.continual import forgetting_report
        from evaluation.forgetting import plot

        rep = forgetting_report(agent.memory)
        if not rep.versions:
            raise HTTPException(404, "nothing learned yet: no forgetting matrix to plot")
        with tempfile.TemporaryDirectory() as d:
            try:
                png = plot(rep, d, formats=("png",))[0]
            except MissingExtra as e:
                raise HTTPException(501, str(e)) from e
            return Response(Path(png).read_bytes(), media_type="image/png")

    return r
