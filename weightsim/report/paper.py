"""The paper's reported numbers (Wang et al., 2022), per experiment, for the collected tables.

Each entry: (net, protocol, measure, chain, paper_chain, value, note). ``net`` is an arch choice
(or "<train arch>-><eval arch>" for cross-network runs); ``chain`` is our chain number, or "each"
when the paper gives one number for every chain (and the net: our row "all"); ``value`` is a top-1 (classification) or rank-1
(retrieval) accuracy in [0, 1], or None where the paper states only the shape of the result (then
``note`` says it). Where the paper's chain numbering differs from ours, ``paper_chain`` keeps its.

Fig. 2 reports three chains per net; we read them as chains 1-3 (the first three layers). Table 2
numbers the 12 residual layers of ResNet-MLP-12, so its chain c is our chain c + 1 (our chain 1 is
the stem Linear). Table 1 gives one number for the whole GRU-2 net.
"""

from __future__ import annotations

C, R = "classification", "retrieval"
GRAM, RAW = "chain_gram", "raw"


def _chains(net: str, protocol: str, measure: str, values: list[float]) -> list[tuple]:
    """Entries for chains 1, 2, ... from a list of percentages."""
    return [(net, protocol, measure, i + 1, i + 1, v / 100, "") for i, v in enumerate(values)]


def _each(net: str, protocol: str, measure: str, value: float | None, note: str) -> tuple:
    return (net, protocol, measure, "each", "each", None if value is None else value / 100, note)


PAPER: dict[str, list[tuple]] = {
    "fig2_tiny_imagenet": [
        *_chains("mlp4", C, GRAM, [99.4, 99.7, 99.1]), *_chains("plainnet5", C, GRAM, [99.6, 99.3, 99.5]),
        *_chains("mlp4", C, RAW, [62.9, 2.4, 2.8]), *_chains("plainnet5", C, RAW, [9.7, 4.4, 4.0]),
        *_chains("mlp4", R, GRAM, [99.3, 98.8, 98.0]), *_chains("plainnet5", R, GRAM, [98.5, 96.3, 97.0]),
        *_chains("mlp4", R, RAW, [85.3, 9.5, 5.3]), *_chains("plainnet5", R, RAW, [15.3, 8.8, 11.0]),
    ],
    "fig3_cifar100": [_each(n, p, GRAM, 98.0, "about 98 % (read from the figure)")
                      for n in ("mlp4", "plainnet5") for p in (C, R)],
    "table1_namedata": [_each("gru2", C, GRAM, 100.0, "one number for the net"),
                        _each("gru2", R, GRAM, 95.7, "one number for the net"),
                        _each("gru2", C, RAW, 17.2, "one number for the net"),
                        _each("gru2", R, RAW, 21.3, "one number for the net")],
    "fig4_factors": [_each(n, p, GRAM, None, "stays high")
                     for n in ("plainnet5", "plainnet6", "resnet5", "plainnet5_leaky") for p in (C, R)],
    "fig5_cross_network": [
        _each("plainnet5", C, GRAM, None, "high (same net)"), _each("plainnet5", R, GRAM, None, "high (same net)"),
        _each("plainnet5->plainnet6", C, GRAM, None, "stays high"),
        _each("plainnet5->plainnet5_leaky", C, GRAM, None, "stays high"),
        _each("plainnet5->resnet5", C, GRAM, None, "drops"),
        *[_each(f"plainnet5->{n}", R, GRAM, None, "robust (stays high)")
          for n in ("plainnet6", "plainnet5_leaky", "resnet5")],
    ],
    "table2_resnet_mlp12": [("resnet_mlp12", C, GRAM, c + 1, c, v / 100, "")
                            for c, v in zip((3, 5, 7, 9, 11), (100.0, 100.0, 100.0, 99.7, 100.0))],
}

# how the collected figure groups the bars: "measures" (one panel per net and protocol, chain Grams
# beside raw layers) or "nets" (one panel per protocol, the nets side by side, chain Grams only)
LAYOUT = {"fig4_factors": "nets", "fig5_cross_network": "nets", "ablation_bn": "nets", "ablation_scale": "nets",
          "ablation_sketch": "nets"}


def paper_value(experiment: str | None, net: str, protocol: str, measure: str, chain) -> dict | None:
    """The paper's entry for one cell of ours, or None: {value, note, paper_chain}."""
    for n, p, m, c, pc, value, note in PAPER.get(experiment or "", []):
        if (n, p, m) == (net, protocol, measure) and c in (chain, "each"):
            return {"value": value, "note": note, "paper_chain": pc if c != "each" else chain}
    return None
