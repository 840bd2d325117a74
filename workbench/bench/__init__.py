"""Benchmarks, one module each, run by `eupe bench ...`: training steps (`training`), the streaming loader
(`data`), cached targets under augmentation (`augment`), the scene generator (`scenes`), live PCA (`live`),
and encoder efficiency (`encoders`, also the scoreboard's columns). FLOPs come from `distill.flops`."""
