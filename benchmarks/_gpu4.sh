python3 -m pip install -q --no-deps --root-user-action=ignore .wheels/av-*.whl 2>&1 | tail -1
export PYTHONPATH=src TOKENIZERS_PARALLELISM=false
echo "=== first caption, cold Triton cache"; bash benchmarks/first_caption.sh pllava-13b 128 64 2>&1 | tail -2
echo "=== first caption, Triton cache filled"; bash benchmarks/first_caption.sh pllava-13b 128 64 2>&1 | tail -2
bash benchmarks/gpu.sh "pllava-13b:512:64" "qwen2.5-vl-7b:384:128:--baseline" 2>&1 | grep -v -E "^\s+(preprocess|generate|model|waiting)|datasketch" | tail -24
