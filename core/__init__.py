"""Stage 0, shared by every stage: the document types, the config schema, run folders, file I/O, statistics."""
