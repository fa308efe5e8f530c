"""A Whisper-style speech-to-text pipeline: an encoder once, then a decoder per generated token.

Built from a config with random weights (nothing is downloaded); "tiny" is for tests, "small" has Whisper-small sizes.
"""
import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Optional

import torch
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

_TOKEN_IDS: dict[str, Any] = dict(
    decoder_start_token_id=1,
    pad_token_id=0,
    eos_token_id=2,
    bos_token_id=1,
    # No suppressed tokens: with random weights every id is as good as another, and fewer logits processors.
    suppress_tokens=None,
    begin_suppress_tokens=None,
)

SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        vocab_size=120,
        num_mel_bins=16,
        encoder_layers=2,
        decoder_layers=2,
        d_model=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=50,  # the two convolutions halve the frames: 100 input frames
        max_target_positions=64,
        # Larger than the default 0.02: the tokens then depend on the input features (with 0.02 every input gives
        # the same ids) and the top logits are further apart, so eager and optimized runs agree on the argmax.
        init_std=0.5,
        **_TOKEN_IDS,
    ),
    "small": dict(
        vocab_size=51865,
        num_mel_bins=80,
        encoder_layers=12,
        decoder_layers=12,
        d_model=768,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
        max_source_positions=1500,  # 3000 input frames (30 s of audio)
        max_target_positions=448,
        **_TOKEN_IDS,
    ),
}

# Warnings that transformers' own Whisper generate() triggers whatever the caller passes: it fills max_length and
# min_length with defaults before handing its config to the generic generate(), and adds suppress_tokens as kwargs.
_GENERATE_NOISE = (
    "Passing `generation_config` together with generation-related arguments",
    "Both `max_new_tokens`",
    "Both `min_new_tokens`",
)


class _DropGenerateNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(noise) for noise in _GENERATE_NOISE)


@contextlib.contextmanager
def _quiet_generate() -> Iterator[None]:
    """Drops only the known, harmless generate() warnings, and only while the block runs."""
    logger = logging.getLogger("transformers.generation.utils")
    noise_filter = _DropGenerateNoise()
    logger.addFilter(noise_filter)
    try:
        yield
    finally:
        logger.removeFilter(noise_filter)


class WhisperStyle:
    """Greedy transcription of log-mel features into exactly `new_tokens` token ids."""

    def __init__(self, model: WhisperForConditionalGeneration, new_tokens: int, device: torch.device,
                 dtype: torch.dtype, use_cache: bool = True, cache_implementation: Optional[str] = None):
        self.model = model
        self.new_tokens = new_tokens
        # Kept here rather than read from the model: the encoder and decoder may be replaced by optimized stand-ins.
        self.device = device
        self.dtype = dtype
        # With the cache (generate()'s default, as users run it) the decoder gets one new token a step and a
        # Cache object; without it, the whole sequence so far as plain tensors. cache_implementation="static"
        # is transformers' own recipe for torch.compile.
        self.use_cache = use_cache
        self.cache_implementation = cache_implementation

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, mel_bins, frames) features -> (batch, new_tokens) int64 token ids, on the pipe's device."""
        # min_new_tokens keeps a random model from stopping early at eos, so every call makes the same decoder calls.
        config = GenerationConfig(
            max_new_tokens=self.new_tokens,
            min_new_tokens=self.new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=self.use_cache,
            cache_implementation=self.cache_implementation,
        )
        with torch.inference_mode(), _quiet_generate():
            return self.model.generate(features.to(self.device, self.dtype), generation_config=config)


def build(size: str = "tiny", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
          new_tokens: int = 8, use_cache: bool = True) -> WhisperStyle:
    """A WhisperStyle pipeline of the given size, with seeded random weights."""
    config = WhisperConfig(**SIZES[size])
    if new_tokens + 1 > config.max_target_positions:  # +1: the decoder start token
        raise ValueError(f"new_tokens={new_tokens} does not fit max_target_positions={config.max_target_positions}")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval().to(device=device, dtype=dtype)
    return WhisperStyle(model, new_tokens, torch.device(device), dtype, use_cache)


def samples(size: str = "tiny", count: int = 2, batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """`count` random log-mel inputs of shape (batch, mel_bins, 2 * max_source_positions), float32, on CPU."""
    sizes = SIZES[size]
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, sizes["num_mel_bins"], 2 * sizes["max_source_positions"])
    return [torch.randn(shape, generator=generator) for _ in range(count)]


def modules(pipe: WhisperStyle) -> dict[str, tuple[object, str]]:
    """The replaceable modules, as {name: (parent, attribute)}: `setattr(parent, attribute, wrap(module))`."""
    return {
        "encoder": (pipe.model.model, "encoder"),
        "decoder": (pipe.model.model, "decoder"),
    }
