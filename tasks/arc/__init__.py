"""ARC few-shot tasks: the self-edit is a tool specification (augmentations + training settings) applied by
test-time training, the paper's second domain."""
