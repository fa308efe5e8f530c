"""A Stable-Diffusion-style text-to-image loop: CLIP text encoder, UNet denoising with guidance, VAE decoder.

Built from configs with random weights (nothing is downloaded); "tiny" is for tests, "sd15" has SD-1.5 sizes.
"""
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": dict(
        unet=dict(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=32,
        ),
        text_encoder=dict(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=16,
            bos_token_id=98,
            eos_token_id=99,
            pad_token_id=99,
        ),
        vae=dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(32, 64),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=16,  # two blocks: one 2x upsampling, an 8x8 latent decodes to 16x16
        ),
    ),
    "sd15": dict(
        unet=dict(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,  # diffusers' name; SD-1.5 means 8 heads
            norm_num_groups=32,
        ),
        text_encoder=dict(
            vocab_size=49408,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            # CLIP's tokenizer: <|startoftext|>, <|endoftext|>, and SD-1.5 pads with <|endoftext|>.
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vae=dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
            sample_size=512,  # three 2x upsamplings: 64x64 latents decode to 512x512
            scaling_factor=0.18215,
        ),
    ),
}

# SD-1.5's scheduler settings.
_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
)


def _cast(module: torch.nn.Module, device: str | torch.device, dtype: torch.dtype) -> None:
    """Moves and casts in place; not through diffusers' to(dtype=...), which warns on every cast."""
    module.to(device)
    if dtype != torch.float32:  # built in float32
        # Module.half() and .bfloat16() cast floating-point tensors only (CLIP's int64 position ids stay as they are).
        casts = {torch.float16: torch.nn.Module.half, torch.bfloat16: torch.nn.Module.bfloat16}
        if dtype not in casts:
            raise ValueError(f"unsupported dtype {dtype}")
        casts[dtype](module)


class SDStyle:
    """Prompt token ids -> decoded images, with `steps` DDIM steps and classifier-free guidance."""

    def __init__(self, text_encoder: CLIPTextModel, unet: UNet2DConditionModel, vae: AutoencoderKL,
                 scheduler: DDIMScheduler, steps: int, guidance_scale: float, device: torch.device,
                 dtype: torch.dtype, latent_seed: int = 0):
        self.text_encoder = text_encoder
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.device = device
        self.dtype = dtype
        self.latent_seed = latent_seed
        # Read once here: the modules may later be replaced by optimized stand-ins without these attributes.
        self.latent_shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        self.scaling_factor = vae.config.scaling_factor
        text_config = text_encoder.config
        # The empty prompt as CLIP's tokenizer gives it: start token, then end token as padding.
        self.uncond_ids = torch.full((1, text_config.max_position_embeddings), text_config.eos_token_id,
                                     dtype=torch.int64, device=device)
        self.uncond_ids[:, 0] = text_config.bos_token_id

    def __call__(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """(batch, max_position) int64 ids -> (batch, 3, H, W) float32 images (unclamped), on the pipe's device."""
        with torch.inference_mode():
            prompt_ids = prompt_ids.to(self.device)
            batch = prompt_ids.shape[0]
            cond = self.text_encoder(prompt_ids)[0]
            uncond = self.text_encoder(self.uncond_ids.expand(batch, -1))[0]
            embeddings = torch.cat([uncond, cond])

            # A fixed seed on a CPU generator: every call, on every device, starts from the same latents, so that
            # eager and optimized runs can be compared output for output.
            generator = torch.Generator().manual_seed(self.latent_seed)
            latents = torch.randn((batch, *self.latent_shape), generator=generator)
            latents = latents.to(self.device, self.dtype) * self.scheduler.init_noise_sigma

            # Set per call: the scheduler keeps the timesteps (and, for some schedulers, a step index) between calls.
            self.scheduler.set_timesteps(self.steps, device=self.device)
            for t in self.scheduler.timesteps:
                latent_in = self.scheduler.scale_model_input(torch.cat([latents, latents]), t)
                noise = self.unet(latent_in, t, encoder_hidden_states=embeddings)[0]
                noise_uncond, noise_cond = noise.chunk(2)
                noise = noise_uncond + self.guidance_scale * (noise_cond - noise_uncond)
                latents = self.scheduler.step(noise, t, latents)[0]

            # Through AutoencoderKL.decode, which calls vae.decoder: that is the module a wrapper replaces.
            image = self.vae.decode(latents / self.scaling_factor)[0]
            return image.float()


def build(size: str = "tiny", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
          steps: int = 3, guidance_scale: float = 7.5) -> SDStyle:
    """An SDStyle pipeline of the given size, with seeded random weights."""
    sizes = SIZES[size]
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**sizes["text_encoder"]))
    unet = UNet2DConditionModel(**sizes["unet"])
    vae = AutoencoderKL(**sizes["vae"])
    for module in (text_encoder, unet, vae):
        _cast(module.eval(), device, dtype)
    return SDStyle(text_encoder, unet, vae, DDIMScheduler(**_SCHEDULER), steps, guidance_scale,
                   torch.device(device), dtype)


def samples(size: str = "tiny", count: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """`count` random prompts: (1, max_position) int64 ids, start token first and end token last, on CPU."""
    text = SIZES[size]["text_encoder"]
    length = text["max_position_embeddings"]
    generator = torch.Generator().manual_seed(seed)
    prompts = []
    for _ in range(count):
        # Ordinary tokens only in between: below the special ids, which CLIP puts at the end of its vocabulary.
        ids = torch.randint(0, min(text["bos_token_id"], text["eos_token_id"]), (1, length), generator=generator)
        ids[:, 0] = text["bos_token_id"]
        ids[:, -1] = text["eos_token_id"]
        prompts.append(ids)
    return prompts


def modules(pipe: SDStyle) -> dict[str, tuple[object, str]]:
    """The replaceable modules, as {name: (parent, attribute)}: `setattr(parent, attribute, wrap(module))`."""
    return {
        "text_encoder": (pipe, "text_encoder"),
        "unet": (pipe, "unet"),
        "vae_decoder": (pipe.vae, "decoder"),
    }
