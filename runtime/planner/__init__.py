"""The memory planner: what a model needs (weights by role, KV cache, compute buffers) against the
memory a machine has, and where each part should live so the biggest model runs at a usable speed.

Pure logic over a GGUF header and a budget; applying a plan to a loaded model is
runtime.llamacpp.overrides' job.
"""
