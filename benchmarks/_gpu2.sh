python3 -m pip install -q --no-deps --root-user-action=ignore .wheels/av-*.whl 2>&1 | tail -1
export PYTHONPATH=src TOKENIZERS_PARALLELISM=false
bash benchmarks/first_caption.sh pllava-13b 128 64 2>&1 | tail -6
bash benchmarks/gpu.sh "pllava-13b:512:64" "llava-1.6-mistral-7b:256:64:--resize 336 --baseline" 2>&1 | grep -v -E "^\s+(preprocess|generate|model|waiting)" | tail -30
