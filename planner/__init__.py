"""Planning: what to train (`scaling/`) and how to lay it out on GPUs (`layout/`).

Pure numpy/scipy: importing anything here never imports torch, nor anything of trainer/ or launch/
(only the plain `parallel.layout.Layout` dataclass). At the top: what both jobs share — the model's
parameter and FLOP counts (`model_spec`), the GPU catalog (`hardware`) and the user-error type.
"""
