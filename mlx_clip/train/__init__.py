"""Fine-tuning pieces: contrastive loss, AdamW groups and schedule, compiled step, evaluation, checkpoints."""
