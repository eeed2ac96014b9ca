"""The entropy-coder comparison: every method codes real bytes, and the bound is a bound."""

import numpy as np

from latentcodec.bench import entropy


def test_methods_on_laplace_symbols():
    rng = np.random.default_rng(0)
    values = np.clip(np.round(rng.laplace(0, 2.0, size=(4, 32, 32))), -127, 127).astype(np.int32)
    dictionary = entropy.train_dictionary([np.roll(values, k, axis=2) for k in range(1, 20)], size=4096)
    sizes = entropy.compare(values, dictionary)
    assert set(sizes) == {"zstd", "zstd per channel", "ans laplace per channel", "order-0 entropy per channel",
                          "zstd + dictionary"}  # fmt: skip
    bound = sizes["order-0 entropy per channel"]
    assert 0 < bound < sizes["zstd"] < values.size  # i.i.d. Laplace: zstd is below 8 bits, above the entropy
    assert bound * 0.95 < sizes["ans laplace per channel"] < bound * 1.1  # the right model codes near the entropy


def test_ans_model_decodes_back():
    import constriction

    values = np.array([[[0, 1, -2], [3, 0, 0]]], dtype=np.int32)
    assert entropy.laplace_ans_bytes(values) >= 4 + 4
    model = constriction.stream.model.QuantizedLaplace(-5, 5)
    coder = constriction.stream.stack.AnsCoder()
    means, scales = np.zeros(6), np.ones(6)
    coder.encode_reverse(values.reshape(-1), model, means, scales)
    assert np.array_equal(coder.decode(model, means, scales), values.reshape(-1))
