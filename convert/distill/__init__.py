"""Teacher -> student distillation (`edge-ai distill`): tokenizer check, data, layer-subset student,
KD training loop. Needs the `convert` extra (torch, transformers)."""
