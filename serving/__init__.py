"""Answering queries with a version: the batched in-process server, routing a query to its document's
adapter, and the vLLM backend."""
