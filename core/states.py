"""A job's states, shared by the job store, the HTTP client and the CLI (so a client needs no database library)."""
from __future__ import annotations

RUNNING = ("writing_probes", "self_editing", "training", "evaluating")
TERMINAL = ("promoted", "rejected", "failed", "cancelled", "duplicate")  # duplicate: already learned by another job
STATES = ("queued", *RUNNING, *TERMINAL)
