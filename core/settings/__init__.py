"""The config sections each stage reads (validated pydantic models; `core.config` assembles them)."""
