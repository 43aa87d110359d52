"""An offline tiny Llama + a BPE tokenizer trained on the fly, so tests and CI never need a hub."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from core.io import atomic_dir

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """\
The river flows through the old city and into the northern sea. Many bridges cross the river.
In 1850 the university was founded by a group of teachers and merchants. It has eight colleges.
The capital of the region is a port with a large harbour, a cathedral, and a famous market.
Scientists measured the temperature of the lake every morning for ten years and wrote a report.
What is the name of the river? Who founded the university? When was the report written?
The answer is short. The question asks about a date, a person, a place, or a number.
Paris is the capital of France. Berlin is the capital of Germany. Rome is the capital of Italy.
The committee met on Monday and voted to build a new library with two thousand books.
Water boils at one hundred degrees. The moon orbits the earth. Light travels faster than sound.
Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina Panthers.
The Normans were the people who gave their name to Normandy, a region in France.
Implications: the passage says that the city grew because of trade along the river.
Question: Where is the market? Answer: in the port. Question: How many colleges? Answer: eight.
"""


def _key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def build_tiny_model(
    cache_dir: str | os.PathLike,
    *,
    vocab_size: int = 640,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    extra_corpus: tuple[str, ...] = (),
) -> Path:
    """Build once, cache by parameters, and return the HF folder (atomic: built in a temp dir, renamed)."""
    params = dict(v=vocab_size, h=hidden_size, l=layers, n=heads, s=seed, c=_key({"c": [_CORPUS, *extra_corpus]}))
    out = Path(cache_dir).expanduser() / f"tiny-{_key(params)}"
    if (out / "config.json").is_file():
        return out
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator([_CORPUS, *extra_corpus], trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    with atomic_dir(out, replace=False) as tmp:  # another process may build it at once; its copy is identical
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out
