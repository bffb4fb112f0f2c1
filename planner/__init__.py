"""Planning: scaling-law fits, compute allocation, model shaping, memory and layout search.

Pure numpy/scipy: importing anything here never imports torch.
"""
