"""The synthesis stage of downscaled streams (taef2-q3): a U-Net upscaler told the scale and the noise level."""

import json

import torch
import torch.nn.functional as F
from shared_inputs import SHARED

from latentcodec.engine.models import load_model, registry
from latentcodec.engine.models.synthesis import Synthesizer
from latentcodec.engine.models.upscaler import Upscaler, bicubic
from latentcodec.training.upscaler import texture_loss


def _perturbed() -> Synthesizer:
    torch.manual_seed(0)
    model = Synthesizer((8, 16, 24))
    torch.nn.init.normal_(model.body.tail.weight, std=0.1)
    return model.eval()


def test_an_untrained_synthesizer_is_bicubic():
    small = torch.rand(2, 3, 17, 23)
    assert torch.equal(Synthesizer((8, 16, 24))(small, (48, 65), 0.5), bicubic(small, (48, 65)))


def test_the_synthesizer_reads_the_noise_level_and_a_batch_is_its_rows():
    model, base = _perturbed(), torch.rand(2, 3, 40, 57)
    ratios, levels = torch.tensor([2.0, 3.0]), torch.tensor([0.2, 0.9])
    with torch.no_grad():
        together = model.residual(base, ratios, levels)
        alone = torch.cat([model.residual(base[[i]], float(ratios[i]), float(levels[i])) for i in range(2)])
        other_level = model.residual(base, ratios, levels.flip(0))
    assert torch.allclose(together, alone, atol=1e-6)
    assert (together - other_level).abs().max() > 1e-3  # told the level, it draws something else


def test_rate_control_tries_a_quarter_scale_only_where_the_resizer_learned_it():
    assert 0.25 in Synthesizer.scales and 0.25 not in Upscaler.scales
    assert set(Upscaler.scales) < set(Synthesizer.scales)


def test_the_texture_term_prefers_texture_of_the_right_strength_to_a_blur():
    torch.manual_seed(0)
    target = torch.rand(1, 3, 64, 64)
    blurred = F.avg_pool2d(target, 5, stride=1, padding=2, count_include_pad=False)
    other_texture = torch.rand(1, 3, 64, 64)  # a different picture of the same statistics
    assert texture_loss(other_texture, target) < 0.5 * texture_loss(blurred, target)
    assert texture_loss(target, target) == 0
    assert F.l1_loss(other_texture, target) > F.l1_loss(blurred, target)  # what L1 alone would prefer


def test_a_seconds_long_synthesis_training_run(tmp_path):
    from safetensors import safe_open

    from latentcodec.engine.models.loaders import _resizer
    from latentcodec.training.upscaler import main

    output = tmp_path / "synthesis.safetensors"
    options = ["--kind", "synthesis", "--texture-weight", "0.5", "--limit", "2", "--steps", "3", "--batch", "2"]
    main(
        [
            str(output),
            *options,
            "--crop",
            "128",
            "--max-side",
            "256",
            "--holdout",
            "1",
            "--folders",
            str(SHARED / "data" / "photos"),
        ]
    )
    with safe_open(str(output), "pt") as handle:
        layout = json.loads(handle.metadata()["latentcodec"])
    assert isinstance(_resizer(layout), Synthesizer)
    assert output.with_suffix(".checkpoint.pt").is_file()


# taef2-q3 --------------------------------------------------------------------------------------------------------


def test_taef2_q3_switches_later_and_resizes_with_the_upscaler():
    model, q2 = load_model("taef2-q3"), load_model("taef2-q2")
    assert model.threshold == registry.TAEF2Q3_THRESHOLD > q2.threshold
    assert type(model.upscaler) is Upscaler and model.rate_scales == q2.rate_scales
    assert model.fingerprint != q2.fingerprint  # the threshold is part of what the stream's decoder is
    latents, sigma = torch.randn(2, 32, 4, 4), torch.tensor([0.5, 0.8])  # between the thresholds, above both
    with torch.no_grad():
        assert torch.equal(model.decode(latents[[0]], sigma[[0]]), load_model("taef2").decode(latents[[0]]))
        assert torch.equal(model.decode(latents[[1]], sigma[[1]]), q2.decode(latents[[1]], sigma[[1]]))
