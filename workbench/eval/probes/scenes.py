"""The generated scenes' classes (12): kNN and linear probe on the summary vectors (`scene_knn10`,
`scene_knn20`, `scene_linear`)."""

from workbench.eval.probes.registry import Column, Probe, register_probe
from workbench.eval.probes.shared_runs import classification_run

PROBE = register_probe(
    Probe(
        name="scenes",
        columns=(Column("scene_knn20", "Scenes kNN-20"), Column("scene_linear", "Scenes linear")),
        settings=("resolution", "scene_train", "scene_test", "batch_size", "seed"),
        run=classification_run("scenes", "scene_class", "scene"),
    )
)
