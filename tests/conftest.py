import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Prefect binds its console log handler to the stream of the first test that logs; pytest closes
# that stream, and the temporary server's INFO goodbye at exit would then print a traceback after
# the test summary. Flow runs still log to their own database at WARNING and above.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# A fresh CI venv compiles Prefect's server modules and migrates a new database on the first
# temporary server start; on 2 cores that once took more than Prefect's default 20 s.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

# Small enough to run in seconds against the real 135M teacher, big enough to exercise every stage.
TINY = [
    "generation.input_requests=6", "generation.inputs_per_request=2", "teacher.max_tokens=40",
    "training.max_steps=4", "training.batch_size=4", "training.logging_steps=1", "training.save_steps=2",
    "eval.max_rows=8", "eval.batch_size=8", "eval.max_new_tokens=32",
    # one round of a few requests: the measurement's rounds are test_serving's and test_train_eval's business
    "eval.serving.requests=4", "eval.serving.rounds=1",
    # the many-shot row with 12 shots, not 50: every slot of the eval server computes its prefix once,
    # and 8 rows never get to reuse it
    "eval.progression.many_shot=12",
]


@pytest.fixture(autouse=True, scope="session")
def _offline_and_cached():
    # The GGUF -> safetensors student conversion is shared by the whole session; no hub access at all.
    os.environ["DISTILL_CACHE"] = os.environ.get("DISTILL_TEST_CACHE", str(ROOT / ".pytest_cache" / "distill"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


@pytest.fixture(autouse=True)
def _own_prefect_home(tmp_path_factory, monkeypatch):
    # Prefect state per test, so runs never share a database by accident.
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect")))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)


def tiny_llama(path: Path) -> Path:
    """A tiny random Llama with a tokenizer of its own (a word-level vocabulary trained here), saved as a
    transformers directory: real decoding and training in seconds."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]", "<pad>"])
    raw.train_from_iterator(["she goes to the market", "the dogs bark"], trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="<pad>", eos_token="<pad>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def distill_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "distill.cli", *args]


_OPENED = []


@pytest.fixture(autouse=True)
def _close_run_contexts():
    # a context keeps its teacher (a local llama.cpp server) until closed: close each test's own
    yield
    while _OPENED:
        _OPENED.pop().close()


def opened(ctx):
    """(context, config, run directory) of a prepared run, closed when the test ends."""
    _OPENED.append(ctx)
    return ctx, ctx.cfg, ctx.dir.root


# Debian's Chromium, headless, for the pages tests open. Without the background-networking flags
# Chromium keeps dialling out, and this network refuses it.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
