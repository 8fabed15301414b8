"""The shared prototype / affinity core used by every method of protocal."""
from .affinity import (flatten_nodes, labelled_to_unlabelled_distances, masked_mean_features,
                       mean_affinity, node_indices, node_masks_from_points, normalize_features,
                       prototype_cosine)
from .bank import PrototypeBank
from .energy import agnostic_energy, class_energies, energy_to_pixels

__all__ = [
    'flatten_nodes', 'labelled_to_unlabelled_distances', 'masked_mean_features', 'mean_affinity',
    'node_indices', 'node_masks_from_points', 'normalize_features', 'prototype_cosine',
    'PrototypeBank', 'agnostic_energy', 'class_energies', 'energy_to_pixels'
]
