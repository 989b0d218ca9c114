"""Models as files: loading (safetensors only), the bundled GGUF converted once, depth pruning
(`load.py`); fine-tuning with TRL (`sft.py`)."""
