"""Models as files: loading (safetensors only), the bundled GGUF converted once (`load.py`); which
layers a smaller student keeps (`prune.py`); fine-tuning with TRL (`sft.py`), logit-level distillation
(`kd.py`, `kd_train.py`); the student as one GGUF file (`gguf_export.py`); batched answers (`infer.py`)."""
