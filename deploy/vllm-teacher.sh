#!/usr/bin/env bash
# The teacher as `vllm serve` on one GPU node, for configs/gpu.yaml (teacher.base_url=http://<host>:8000/v1).
#   TP = GPUs one replica is split over (the model must fit in TP x GPU memory)
#   DP = replicas behind the one endpoint (throughput); TP x DP GPUs in all.
# The distill client sends teacher.max_concurrency requests at once; vLLM batches them.
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-7B-Instruct}
TP=${TP:-2}
DP=${DP:-2}
exec vllm serve "$MODEL" \
  --served-model-name teacher \
  --tensor-parallel-size "$TP" \
  --data-parallel-size "$DP" \
  --dtype bfloat16 \
  --max-model-len 4096 \
  --enable-prefix-caching \
  --host 0.0.0.0 --port "${PORT:-8000}" \
  ${VLLM_API_KEY:+--api-key "$VLLM_API_KEY"}
