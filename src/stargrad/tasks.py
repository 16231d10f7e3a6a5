"""Tasks: which labels a model learns, from which dataset, as regression or classification."""
from __future__ import annotations

from dataclasses import dataclass

from .sdss import apogee

#: Seismic labels and their units; evstate is 0 (RGB) / 1 (RC).
SEISMIC_LABELS = {"dnu": "μHz", "numax": "μHz", "dpi1": "s", "evstate": "class (0 RGB, 1 RC)"}
KNOWN_LABELS = tuple(apogee.ASPCAP_LABELS) + tuple(SEISMIC_LABELS)
LABEL_SETS = {"aspcap": tuple(apogee.ASPCAP_LABELS)}


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    labels: tuple[str, ...]
    kind: str = "regression"

    @property
    def n_outputs(self) -> int:
        return len(self.labels)


def unit(label: str) -> str:
    """Physical unit of a label."""
    return SEISMIC_LABELS.get(label) or apogee.label_unit(label)


def make_task(name: str, spec: dict) -> Task:
    """Build a Task from its config entry ({dataset, labels: 'aspcap' | [names], kind})."""
    labels = spec["labels"]
    labels = LABEL_SETS[labels] if isinstance(labels, str) and labels in LABEL_SETS else labels
    if isinstance(labels, str):
        labels = [labels]
    unknown = [l for l in labels if l not in KNOWN_LABELS]
    if unknown:
        raise ValueError(f"task {name!r}: unknown labels {unknown}; known: {list(KNOWN_LABELS)} "
                         f"or a set name {list(LABEL_SETS)}")
    kind = spec.get("kind", "regression")
    if kind == "classification" and list(labels) != ["evstate"]:
        raise ValueError(f"task {name!r}: classification is defined for labels ['evstate'] only")
    return Task(name=name, dataset=spec["dataset"], labels=tuple(labels), kind=kind)


def tasks_from_config(config: dict) -> dict[str, Task]:
    return {name: make_task(name, spec) for name, spec in config["tasks"].items()}
