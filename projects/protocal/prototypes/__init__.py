"""The shared prototype / affinity core used by every method of protocal."""
from .affinity import (flatten_nodes, labelled_to_unlabelled_distances, masked_mean_features,
                       mean_affinity, node_indices, node_masks_from_points, normalize_features,
                       prototype_cosine)
from .bank import PrototypeBank
from .energy import agnostic_energy, class_energies, energy_to_pixels
from .subclass import (class_slices, expand_parent_labels, merge_subclasses, prototype_cam,
                       subclass_parent_index)

__all__ = [
    'flatten_nodes', 'labelled_to_unlabelled_distances', 'masked_mean_features', 'mean_affinity',
    'node_indices', 'node_masks_from_points', 'normalize_features', 'prototype_cosine',
    'PrototypeBank', 'agnostic_energy', 'class_energies', 'energy_to_pixels',
    'class_slices', 'expand_parent_labels', 'merge_subclasses', 'prototype_cam',
    'subclass_parent_index'
]

# dense prototypes and local affinities for segmentation (issue 11)
from .regional import (downsample_label_masks, label_map_prototypes, label_map_to_masks,  # noqa: E402
                       local_affinity_kernel, local_kernel_config, local_potts_loss,
                       local_prediction_agreement, potts_affinity_loss, prototype_class_affinity,
                       unfold_windows, upsampled_prototype_class_affinity)

__all__ += [
    'label_map_to_masks', 'downsample_label_masks', 'label_map_prototypes',
    'prototype_class_affinity', 'local_affinity_kernel', 'unfold_windows',
    'local_prediction_agreement', 'potts_affinity_loss', 'local_potts_loss',
    'upsampled_prototype_class_affinity', 'local_kernel_config'
]

# separable resampling matrices of energy_to_pixels, used by the fused losses (issue 15)
from .energy import interpolation_weights  # noqa: E402

__all__ += ['interpolation_weights']
