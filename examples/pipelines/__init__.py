"""Small multi-module pipelines (Whisper-style, Stable-Diffusion-style) built from configs with random weights."""
