"""Configuration of the generative world model (a conditional top-K VQ-VAE).

``WorldModelConfig`` is a plain dataclass, loadable from YAML with
:func:`sfp_env.config.from_dict`; it is validated on construction and stored verbatim in every
checkpoint, so :meth:`GenerativeWorldModel.from_pretrained` can name each field that differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sfp_env.errors import ConfigError, RegistryError
from sfp_env.world_model.networks import OUTPUT_ACTIVATIONS

__all__ = ["WorldModelConfig"]


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class WorldModelConfig:
    """Sizes and training constants of :class:`GenerativeWorldModel`.

    Frames are ``[B, T, C, H, W]``. The model encodes a future chunk of ``chunk_frames`` frames
    into a latent ``[B, latent_dim, height / downsample, width / downsample]`` whose cells are
    quantized against a codebook of ``codebook_size`` codes, and decodes it (conditioned on the
    ``in_frames`` past frames when ``conditional``) back to ``[B, chunk_frames, C, H, W]``.

    Attributes:
        in_frames: past frames T_in given as context (ignored, may be 0, when not conditional).
        chunk_frames: frames T_f per planning step (one latent decodes to T_f frames).
        channels: channels C per frame (1 for VIL/vorticity/SST, 69 in the climate setup).
        height, width: frame size H, W in pixels; both divisible by ``downsample``.
        latent_dim: D, channels of the latent and dimension of each code.
        codebook_size: E, number of codes.
        downsample: spatial reduction H / h, a power of two (4: h = H / 4, w = W / 4).
        hidden: base width of the networks; level i (resolution H / 2**i) has ``hidden * 2**i``
            channels.
        ema_decay: decay of the EMA codebook statistics, in (0, 1).
        commitment: weight of the commitment loss ||z - sg(code)||^2.
        commitment_data_scaled: multiply the commitment loss by the (detached) variance of the
            target batch, so that ``MSE(recon, target) + vq_loss`` weighs the two terms like
            ``MSE / Var(data) + commitment * ||z - sg(code)||^2`` (the VQ-VAE reference
            implementation, Sonnet, divides the reconstruction error by the data variance).
            Without it, data of small variance (sparse storms in [0, 1]) lets the commitment
            term dominate and collapse the encoder.
        dead_code_threshold: a code whose EMA usage (assignments per batch) falls below this is
            restarted from a random encoder output of the current batch; in [0, 1) because a
            restarted code starts at usage 1, so an unused code is restarted after
            ``log(threshold) / log(ema_decay)`` batches (about 10 for the defaults); 0 disables
            restarts.
        conditional: decode with skip connections from the context encoder (False: plain
            reconstruction, ``context=None``, e.g. the 69-variable climate setup).
        context_dropout: probability, per training sample, of zeroing the context features in
            :meth:`GenerativeWorldModel.forward`, in [0, 1). The decoder could learn to predict
            from the context alone, leaving a latent the output does not depend on (the K codes
            would then decode to the same future); decoding some samples from the latent alone
            keeps the latent carrying the future.
        top_k: default K of :meth:`GenerativeWorldModel.imagine`; at most ``codebook_size``.
        output_activation: name in ``OUTPUT_ACTIVATIONS`` ("none", "sigmoid" for [0, 1] data,
            "tanh" for [-1, 1] data).
        seed: seeds the weight initialization and the dead-code restarts (local generators).
    """

    in_frames: int = 13
    chunk_frames: int = 4
    channels: int = 1
    height: int = 64
    width: int = 64
    latent_dim: int = 16
    codebook_size: int = 256
    downsample: int = 4
    hidden: int = 24
    ema_decay: float = 0.99
    commitment: float = 0.25
    commitment_data_scaled: bool = True
    dead_code_threshold: float = 0.9
    conditional: bool = True
    context_dropout: float = 0.1
    top_k: int = 10
    output_activation: str = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ["chunk_frames", "channels", "height", "width", "latent_dim", "codebook_size",
                    "downsample", "hidden", "top_k"]
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"WorldModelConfig.{name} must be a positive integer, got {value!r}",
                    fix=f"set {name} to an integer >= 1",
                )
        if isinstance(self.in_frames, bool) or not isinstance(self.in_frames, int):
            raise ConfigError(f"WorldModelConfig.in_frames must be an integer, got "
                              f"{self.in_frames!r}", fix="set in_frames to the number of past "
                              "frames given as context")
        if self.conditional and self.in_frames < 1:
            raise ConfigError(
                f"WorldModelConfig.in_frames must be >= 1 for a conditional model, got "
                f"{self.in_frames}",
                fix="set in_frames to the number of context frames, or conditional=false for "
                "plain reconstruction",
            )
        if self.in_frames < 0:
            raise ConfigError(f"WorldModelConfig.in_frames must be >= 0, got {self.in_frames}",
                              fix="set in_frames=0 for an unconditional model")
        if not _is_power_of_two(self.downsample):
            raise ConfigError(
                f"WorldModelConfig.downsample must be a power of two, got {self.downsample}",
                fix="use downsample 1, 2, 4 or 8",
            )
        for name in ("height", "width"):
            size = getattr(self, name)
            if size % self.downsample:
                raise ConfigError(
                    f"WorldModelConfig.{name}={size} is not divisible by downsample="
                    f"{self.downsample}",
                    fix=f"crop/resize the frames so that {name} is a multiple of "
                    f"{self.downsample}, or change downsample",
                )
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"WorldModelConfig.ema_decay must lie in (0, 1), got "
                              f"{self.ema_decay}", fix="use a decay such as 0.99")
        if not self.commitment >= 0.0:
            raise ConfigError(f"WorldModelConfig.commitment must be >= 0, got {self.commitment}",
                              fix="use a weight such as 0.25")
        if not 0.0 <= self.dead_code_threshold < 1.0:
            raise ConfigError(
                f"WorldModelConfig.dead_code_threshold must lie in [0, 1), got "
                f"{self.dead_code_threshold}",
                fix="use e.g. 0.9 (a code unused for ~10 batches at decay 0.99 is restarted), "
                "or 0 to disable restarts",
            )
        if not 0.0 <= self.context_dropout < 1.0:
            raise ConfigError(
                f"WorldModelConfig.context_dropout must lie in [0, 1), got {self.context_dropout}",
                fix="use e.g. 0.1, or 0 to always give the decoder the context",
            )
        if self.top_k > self.codebook_size:
            raise ConfigError(
                f"WorldModelConfig.top_k={self.top_k} exceeds codebook_size="
                f"{self.codebook_size}",
                fix=f"set top_k <= {self.codebook_size}",
            )
        try:
            OUTPUT_ACTIVATIONS.get(self.output_activation)
        except RegistryError as e:
            raise ConfigError(
                f"WorldModelConfig.output_activation: {e.problem}", fix=e.fix
            ) from None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(D, h, w)`` of one latent."""
        return (self.latent_dim, self.height // self.downsample, self.width // self.downsample)

    def replace(self, **changes: object) -> WorldModelConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)
