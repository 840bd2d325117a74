"""The CLS token's attention to each patch, per encoder, as the feature-map tab shows it."""

from __future__ import annotations

from workbench.explore.explorer import Explorer, Panel, View
from workbench.viz.panels import colorize, overlay
from workbench.viz.upsample import upsample


def attention_maps(
    explorer: Explorer,
    key: str,
    specs: list[str],
    resolution: int,
    layer: int | None = None,
    smooth: bool = False,
    keep_aspect: bool = False,
) -> View:
    """The input, then each encoder's CLS-to-patch attention in `layer` (None: the last), averaged over its
    heads and blended over the image, from 0 to its largest patch share; a note for each encoder without one
    (CNNs, ViTs without a CLS token, offline experts); with `keep_aspect`, over the native-aspect copy."""
    image = explorer.cache.image(key, keep_aspect)
    view = View([Panel(explorer.picture(key, keep_aspect=keep_aspect), "input")])
    for spec in specs:
        try:
            attention = explorer.cache.inside(key, spec, resolution, layer, keep_aspect).attention
        except ValueError as error:
            view.notes.append(str(error))
            continue
        name = explorer.encoder_name(spec)
        if attention is None:
            view.notes.append(f"{name} gives no CLS attention (a CNN, or a ViT without a CLS token)")
            continue
        mean = attention[0].mean(0)
        high = float(mean.max())
        shown = colorize(upsample(mean, tuple(image.shape[-2:]), smooth), "inferno", 0.0, max(high, 1e-6))
        caption = f"{name} · CLS→patch, mean of {attention.shape[1]} heads · max {high:.3f}"
        view.panels.append(Panel(overlay(image, shown), caption))
    return view
