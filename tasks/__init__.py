"""Task domains beyond documents: each turns a few-shot problem into self-edits the student trains on."""
