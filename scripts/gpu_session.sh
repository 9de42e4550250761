#!/usr/bin/env bash
# The GPU figures in docs/benchmarks.md, in the few calls a lent GPU machine allows (its python3 already has torch
# and transformers; the project runs from the tree with PYTHONPATH=.). Logs and JSON land in $OUT (or ./gpu-out).
#   bash scripts/gpu_session.sh verify     # GPU tests, verify of a 20b-shaped checkpoint and a 120b-shaped one on CUDA
#   bash scripts/gpu_session.sh bench      # bench_gpu.py: ours vs Transformers eager/flex, 20b shape, bf16
#   bash scripts/gpu_session.sh offload    # bench_offload.py: 120b-shaped, layers in pinned host memory
#   bash scripts/gpu_session.sh tests      # only tests/test_gpu.py
#   bash scripts/gpu_session.sh grpo       # bench_grpo_gpu.py: one GRPO step with LoRA, 20b shape, G = 8, 256 tokens
#   bash scripts/gpu_session.sh mxfp4      # packed experts: bench_gpu.py against HF and ours (same run), then the decode
#                                          # profiles at batch 1 and 8 (~9 min)
#   bash scripts/gpu_session.sh tests-parallel  # test_mxfp4_kernels, test_gpu_mxfp4, test_gpu and test_decode, a process
#                                          # each at once, logs in $OUT/<file>.log (the seventh session's way: ~5 min)
#   bash scripts/gpu_session.sh mxfp4-tests  # the kernel, fast-path and decoder GPU tests (a call of their own: in the
#                                          # fourth session 220 s ran 97 of the 106)
#   bash scripts/gpu_session.sh attention-kernel  # bench_attention_kernel.py: the one-token attention kernel against
#                                          # Inductor's kernels, batch 1 and 8, 1k-16k keys (a few minutes)
#   bash scripts/gpu_session.sh decode-variants  # bench_decode_variants.py: by default its VARIANTS (~5 min;
#                                          # VARIANTS="..." for others, e.g. combo-kernels, aggressive-fusion, or the
#                                          # older ways: qkv-inductor, attention-inductor, o-proj-kernel, rows-kernel)
#   bash scripts/gpu_session.sh check-variants  # the kernel cases and the GPU tests (~5 min), then the decode variants of
#                                          # $VARIANTS (default: base, combo-kernels, aggressive-fusion)
#   bash scripts/gpu_session.sh ncu-experts  # Nsight Compute on the expert kernels at 1, 8 and 2048 tokens (TOKENS="..."):
#                                          # warp stalls, memory throughput, occupancy; text reports in $OUT/ncu-*.txt
#   The ninth session: the same-run table (batch 8 1,504.6, batch 1 467.6, prefill 2048 38.2k), `mxfp4-memory` from
#   a checkpoint (15.02 GB), `launch-cost` (3.0 µs a launch, 2.5 TB/s beyond it) and the loop pipelined by Triton
#   (slower; docs/benchmarks.md). The tenth: `access-pattern` (the read order is not what holds batch 1), one multiply
#   a weight pair (`PREFILL="" VARIANTS="base experts-two-multiplies" ... decode-variants`: batch 8 1,526.5 against
#   1,499.5) and the same-run table (batch 8 1,530.3, batch 1 468.4, prefill 37.8k)
#   bash scripts/gpu_session.sh launch-cost  # bench_expert_launch_cost.py: batch 1's expert launch as a fixed cost a
#                                          # launch plus a cost a byte (CUDA graphs of back-to-back launches)
#   bash scripts/gpu_session.sh access-pattern  # bench_expert_access_pattern.py: the experts' bytes read by loads alone,
#                                          # contiguous against the fragments kernel's order, beside the kernel (a minute)
#   bash scripts/gpu_session.sh mxfp4-memory  # packed 20b from a checkpoint + 4k KV cache; 120b built in memory
#   bash scripts/gpu_session.sh calibrate [float32|bfloat16]
#                                          # calibrate_gates.py: gptoss_model, OpenAI's gpt_oss.torch and Transformers
#                                          # against each other on a 20b-shaped checkpoint. The machine has no internet:
#                                          # carry the gpt-oss wheel in .whl/ (pip download --no-deps
#                                          # --ignore-requires-python gpt-oss==0.0.9 -d .whl); it is unpacked onto PYTHONPATH.
#   bash scripts/gpu_session.sh candidates # verify --candidate on CUDA, tiny checkpoint: gptoss_model:fast (its compiled
#                                          # pieces), gptoss_model:mxfp4 (the Triton kernels), openai (carry .whl/, see calibrate),
#                                          # transformers:flex_attention and :sdpa against eager, and the
#                                          # candidate tests (tests/test_candidates.py); reports in $OUT/candidates/
#   bash scripts/gpu_session.sh goldens    # bench_goldens.py: float32 then bfloat16 goldens of a 20b-shaped checkpoint
#                                          # (24 layers, 45 checked rows): real size (goal: float32 < 100 MB) against the
#                                          # estimate, replayed by verify --goldens
#   bash scripts/gpu_session.sh tune       # the kernel, fast-path and decoder GPU tests, then the tile sweep of
#                                          # bench_mxfp4_kernels.py (CUDA-graph timing), its best tiles in $OUT/tiles.json
#   bash scripts/gpu_session.sh profile-bench  # with $OUT/tiles.json (or TILES=...): profile_gpu.py at batch 1 and 8,
#                                          # then bench_gpu.py for our two CUDA-graph paths (no Transformers rows)
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
case "${1:-verify}" in
tests)
  python3 -m pytest -q -s -p no:cacheprovider -p no:logging tests/test_gpu.py tests/test_decode.py 2>&1 | grep -v DEBUG | tee "$OUT/gpu_tests.log"
  ;;
verify)
  python3 -m pytest -q -s -p no:cacheprovider -p no:logging tests/test_gpu.py 2>&1 | grep -v DEBUG | tee "$OUT/gpu_tests.log"
  python3 scripts/make_checkpoint.py --shape 20b --layout hf --out /tmp/ckpt20b 2>&1 | tail -1
  python3 scripts/bench_verify.py --checkpoint /tmp/ckpt20b --device cuda --report "$OUT/verify20b" 2>&1 | tail -25 | tee "$OUT/verify20b.json"
  python3 scripts/bench_verify.py --checkpoint /tmp/ckpt20b --device cuda --dtype bfloat16 --report "$OUT/verify20b-bf16" 2>&1 | tail -16 | tee "$OUT/verify20b-bf16.json"
  rm -rf /tmp/ckpt20b
  python3 scripts/make_checkpoint.py --shape 120b --layout hf --layers 6 --out /tmp/ckpt120b 2>&1 | tail -1
  python3 scripts/bench_verify.py --checkpoint /tmp/ckpt120b --device cuda --report "$OUT/verify120b" 2>&1 | tail -16 | tee "$OUT/verify120b.json"
  ;;
bench)
  python3 scripts/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 | grep -v Warning | tee "$OUT/bench_gpu.log"
  ;;
grpo)
  python3 scripts/bench_grpo_gpu.py --out "$OUT/bench_grpo.json" 2>&1 | tee "$OUT/bench_grpo.log"
  ;;
mxfp4)  # the same-run figures first, then where the decode step spends its time
  timeout 400 python3 scripts/bench_gpu.py --prefill 2048 --impl hf-eager hf-flex ours-graph ours-mxfp4-graph \
    --json "$OUT/bench_gpu_mxfp4.json" 2>&1 | grep -v Warning > "$OUT/bench_gpu_mxfp4.log"; tail -8 "$OUT/bench_gpu_mxfp4.log"
  timeout 80 python3 scripts/profile_gpu.py --impl ours-mxfp4-graph --json "$OUT/profile.json" 2>&1 | tail -2
  timeout 80 python3 scripts/profile_gpu.py --impl ours-mxfp4-graph --batch 8 --prefill 256 \
    --json "$OUT/profile-b8.json" 2>&1 | tail -2
  ;;
launch-cost)
  timeout 300 python3 scripts/bench_expert_launch_cost.py --json "$OUT/launch-cost.json" 2>&1 | tail -7
  ;;
access-pattern)
  timeout 300 python3 scripts/bench_expert_access_pattern.py --json "$OUT/access-pattern.json" 2>&1 | grep -v Warning
  ;;
mxfp4-tests)
  timeout 560 python3 -m pytest -q -p no:cacheprovider -p no:logging -W ignore tests/test_mxfp4_kernels.py \
    tests/test_gpu_mxfp4.py tests/test_gpu.py tests/test_decode.py 2>&1 | grep -v DEBUG > "$OUT/gpu_tests.log"
  tail -8 "$OUT/gpu_tests.log"
  ;;
tests-parallel)  # the four GPU test files at once, a process each (their time is mostly compiling; ~5 min)
  for file in test_mxfp4_kernels test_gpu_mxfp4 test_gpu test_decode; do
    timeout ${TEST_LIMIT:-400} python3 -m pytest -q -p no:cacheprovider -p no:logging -W ignore tests/$file.py \
      > "$OUT/$file.log" 2>&1 &
  done
  wait
  for file in test_mxfp4_kernels test_gpu_mxfp4 test_gpu test_decode; do echo "$file: $(tail -n 1 "$OUT/$file.log")"; done
  ;;
check-variants)
  timeout ${TEST_LIMIT:-300} python3 -m pytest -q -p no:cacheprovider -p no:logging -W ignore tests/test_mxfp4_kernels.py \
    tests/test_gpu_mxfp4.py tests/test_gpu.py tests/test_decode.py 2>&1 | grep -v DEBUG > "$OUT/gpu_tests.log"
  tail -8 "$OUT/gpu_tests.log"
  timeout ${VARIANT_LIMIT:-250} python3 scripts/bench_decode_variants.py \
    --variants ${VARIANTS:-base combo-kernels aggressive-fusion} \
    --json "$OUT/decode_variants.json" 2>&1 | grep -v Warning
  ;;
attention-kernel)
  timeout 560 python3 scripts/bench_attention_kernel.py --json "$OUT/attention_kernel.json" 2>&1 | grep -v Warning
  ;;
ncu-experts)  # --clock-control none: the device notes ask to leave the clocks alone; 2 launches of each projection
  # (the kernel that serves each size: mxfp4_fragments' at 1 and 8 tokens, mxfp4_moe's tiles at 2048)
  for tokens in ${TOKENS:-1 8 2048}; do
    timeout 150 ncu --clock-control none -k "regex:_fragments_kernel|_moe_mxfp4_kernel" --launch-skip 10 \
      --launch-count 2 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section Occupancy --section LaunchStats --section SchedulerStats --section ComputeWorkloadAnalysis \
      python3 scripts/bench_mxfp4_kernels.py --no-sweep --tokens $tokens > "$OUT/ncu-$tokens.txt" 2>&1
    grep -E "Duration|Memory Throughput|Achieved Occupancy|Registers Per|Issue Slots|Grid Size" "$OUT/ncu-$tokens.txt" | head -16
  done
  ;;
decode-variants)
  timeout 560 python3 scripts/bench_decode_variants.py ${VARIANTS:+--variants $VARIANTS} ${PREFILL+--prefill $PREFILL} \
    --json "$OUT/decode_variants.json" 2>&1 | grep -v Warning  # VARIANTS="a b": a subset; PREFILL="": decoding only
  ;;
tune)
  timeout 300 python3 -m pytest -q -p no:cacheprovider -p no:logging -W ignore ${TESTS:-tests/test_mxfp4_kernels.py \
    tests/test_gpu_mxfp4.py tests/test_gpu.py tests/test_decode.py} 2>&1 | grep -v DEBUG > "$OUT/gpu_tests.log"
  tail -12 "$OUT/gpu_tests.log"
  timeout 280 python3 scripts/bench_mxfp4_kernels.py --graph --tokens 1 8 2048 --save-best "$OUT/tiles.json" \
    --json "$OUT/mxfp4_kernels.json" 2>&1 | tail -12
  ;;
profile-bench)
  export GPTOSS_MXFP4_TILES=${TILES:-$OUT/tiles.json}
  python3 scripts/profile_gpu.py --impl ours-mxfp4-graph ours-graph --json "$OUT/profile-b1.json" 2>&1 | tail -4
  python3 scripts/profile_gpu.py --impl ours-mxfp4-graph --batch 8 --prefill 256 --json "$OUT/profile-b8.json" 2>&1 | tail -4
  python3 scripts/bench_gpu.py --prefill 2048 --impl ours-graph ours-mxfp4-graph --json "$OUT/bench_gpu_ours.json" \
    2>&1 | grep -v Warning | tee "$OUT/bench_gpu_ours.log"
  ;;
mxfp4-memory)
  python3 scripts/make_checkpoint.py --shape 20b --layout hf --out /tmp/ckpt20b 2>&1 | tail -1
  python3 scripts/bench_gpu_memory.py --checkpoint /tmp/ckpt20b --json "$OUT/memory20b.json"
  python3 scripts/bench_gpu_memory.py --shape 120b --json "$OUT/memory120b.json"
  ;;
offload)
  python3 scripts/bench_offload.py --checkpoint /tmp/ckpt120b --layers 8 2>&1 | tee "$OUT/offload.json"
  ;;
calibrate)
  python3 -c "import gpt_oss.torch.model" 2>/dev/null || {
    python3 -m zipfile -e .whl/gpt_oss-0.0.9-py3-none-any.whl /tmp/gpt-oss-pkg && export PYTHONPATH=.:/tmp/gpt-oss-pkg; }
  python3 scripts/calibrate_gates.py --make 20b --checkpoint /tmp/ckpt20b --device cuda --dtype "${2:-float32}" \
    --out "$OUT/calibration-${2:-float32}" 2>&1 | tail -40 | tee "$OUT/calibration-${2:-float32}.log"
  ;;
candidates)
  mkdir -p "$OUT/candidates"
  python3 -c "import gpt_oss.torch.model" 2>/dev/null || {
    python3 -m zipfile -e .whl/gpt_oss-0.0.9-py3-none-any.whl /tmp/gpt-oss-pkg && export PYTHONPATH=.:/tmp/gpt-oss-pkg; }
  for spec in gptoss_model gptoss_model:fast gptoss_model:mxfp4 openai transformers:flex_attention transformers:sdpa; do
    python3 -m gptoss_convert.cli verify --device cuda --candidate "$spec" --report "$OUT/candidates/${spec//:/-}" \
      2>&1 | tail -12 | tee "$OUT/candidates/${spec//:/-}.log"
  done
  python3 -m pytest -q -p no:cacheprovider tests/test_candidates.py 2>&1 | tail -15 | tee "$OUT/candidates/tests.log"
  ;;
goldens)
  python3 scripts/make_checkpoint.py --shape 20b --layout hf --out /tmp/ckpt20b 2>&1 | tail -1
  for dtype in float32 bfloat16; do
    python3 scripts/bench_goldens.py --skip-speed --checkpoint /tmp/ckpt20b --dtype $dtype --device cuda \
      --out "$OUT/goldens20b-$dtype.json" 2>&1 | tail -30 | tee "$OUT/goldens20b-$dtype.log"
  done
  ;;
esac
