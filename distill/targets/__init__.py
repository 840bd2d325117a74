"""The teachers' targets for training, from one of two sources behind one protocol (`TargetSource`).

source.py       the protocol, and `stage_targets`: which source gives a stage its targets
cache.py        the feature cache of fixed views (standardised, per teacher and side)
store_format.py store_write.py store.py store_cli.py
                the feature store of a streamed corpus (raw, per sample id): its format on disk, its
                building, its reading, and `eupe cache build`
Each keeps its files' integrity records with distill.integrity.
"""
