"""Teacher RL (ReST-EM): sample self-edits, score each by what it teaches the student, train on winners."""
