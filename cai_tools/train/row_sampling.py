"""Sampling whose draws belong to a row, not to the batch: PPO's rollouts.

``model.generate(do_sample=True)`` draws every row's token from one random stream, so an answer
depends on which other prompts share its batch, and a run split over several processes samples
other answers than the same run in one. Here each row has its own generator, seeded from the
run's seed and the prompt's place in the step, and the token is sampled by the Gumbel-max trick:
argmax(logits / T + Gumbel noise) is an exact draw from softmax(logits / T). Greedy decoding
over these perturbed scores therefore samples, row by row, the same answer whatever the batch.
"""

from __future__ import annotations


def row_seed(seed: int, step: int, index: int) -> int:
    """The seed of the ``index``-th prompt of optimizer step ``step`` (0-based) of a run."""
    return ((seed * 1_000_003 + step) * 65_537 + index) % (2 ** 63)


class RowGumbelSampler:
    """A transformers logits processor: adds each row's own Gumbel noise to logits / temperature.
    Use with ``do_sample=False``; every call draws one noise vector per row, so a row's t-th token
    uses its generator's t-th draw."""

    def __init__(self, seeds: list[int], temperature: float, device):
        import torch

        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = temperature
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        if scores.shape[0] != len(self.generators):
            raise ValueError(f"{scores.shape[0]} rows but {len(self.generators)} seeds")
        tiny = torch.finfo(torch.float32).tiny
        uniform = torch.stack([torch.rand(scores.shape[1], generator=g, device=scores.device)
                               for g in self.generators])
        exponential = (-torch.log(uniform.clamp(min=tiny))).clamp(min=tiny)   # > 0
        gumbel = -torch.log(exponential)
        # -inf logits (masked tokens) stay -inf: never drawn
        return scores.float() / self.temperature + gumbel
