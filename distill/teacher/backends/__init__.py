"""How requests travel, one small module each, all behind `distill.teacher.cached.Backend`:
`openai` (any OpenAI-protocol server), `openai_batch` (the Batch API), `vllm_offline` (vLLM in this
process) and `transformers` (the LoRA-adapted open teacher in this process)."""
