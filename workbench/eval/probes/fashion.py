"""Fashion-MNIST (Debian's files): kNN and linear probe on the summary vectors (`fashion_knn10`,
`fashion_knn20`, `fashion_linear`); no scores where the dataset is not installed."""

from workbench.eval.probes.registry import Column, Probe, register_probe
from workbench.eval.probes.shared_runs import classification_run

PROBE = register_probe(
    Probe(
        name="fashion",
        columns=(Column("fashion_knn20", "F-MNIST kNN-20"), Column("fashion_linear", "F-MNIST linear")),
        settings=("fashion_train", "fashion_test", "fashion_resolution", "batch_size", "seed"),
        run=classification_run("fashion", "labels", "fashion"),
    )
)
