"""Hugging Face in and out: a run's checkpoint as a `transformers` folder (`export.py`), and a
`transformers` folder as a run's initial weights (`initial_weights.py`).

`model.arch=llama` is `LlamaForCausalLM`; `model.arch=gpt` is `GPT2LMHeadModel` (pre-LayerNorm
blocks, learned absolute positions, a final LayerNorm, a tanh-GeLU MLP of any width and an optional
untied head: exactly our GPT, whereas GPT-NeoX and GPT-J use rotary positions and parallel blocks).
What the names and tensors are on each side is written once, in `config_json.py` and `weights.py`.
"""
