"""mlx_clip: CLIP in Apple MLX, fine-tuned on your own images and their metadata."""
