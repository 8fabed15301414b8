"""EMA prototype bank: one feature vector per class, kept as module buffers."""
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .affinity import masked_mean_features

__all__ = ['PrototypeBank']


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class PrototypeBank(nn.Module):
    """Class prototypes updated by an exponential moving average of annotated node features.

    ``p_c <- m * mu_c + (1 - m) * p_c`` where ``mu_c`` is the mean over the images of the batch
    (over all processes in distributed training) that contain class ``c`` of each image's mean raw
    feature of its class-``c`` nodes. Compared with the PCL reference code (trap T10):

    * prototypes are **buffers**: saved in checkpoints, never handed to the optimizer;
    * each class gets its own seeded initial vector ``|N(0, 1)|`` (the reference used one draw
      for all classes);
    * a class absent from the whole batch is **not** updated (the reference shrank it by
      ``1 - m``);
    * the update is synchronised with ``all_reduce`` so every process keeps identical prototypes.

    Args:
        num_classes: number of foreground classes ``K``.
        dims: feature dimension ``D``.
        momentum: EMA weight ``m`` of the new batch mean (0.01 in PCL).
        seed: seed of the initial prototypes.
    """

    def __init__(self, num_classes: int, dims: int, momentum: float = 0.01, seed: int = 0):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f'momentum must be in (0, 1], got {momentum}')
        self.num_classes = num_classes
        self.dims = dims
        self.momentum = momentum
        generator = torch.Generator().manual_seed(seed)
        init = torch.randn(num_classes, dims, generator=generator).abs()
        self.register_buffer('prototypes', init)
        self.register_buffer('num_updates', torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def update(self, feats: Tensor, node_masks: Tensor) -> Tensor:
        """EMA update from a batch.

        Args:
            feats: (B, D, N) raw node features.
            node_masks: (B, K, N) bool multi-hot node labels.

        Returns:
            (K,) bool, the classes that were updated.
        """
        feats = feats.detach().float()
        means, present = masked_mean_features(feats, node_masks)  # (B, K, D), (B, K)
        weights = present.to(feats.dtype)
        total = torch.einsum('bk,bkd->kd', weights, means)
        count = weights.sum(0)
        if _dist_ready():
            packed = torch.cat([total, count[:, None]], dim=1)
            dist.all_reduce(packed)
            total, count = packed[:, :-1], packed[:, -1]
        seen = count > 0
        if not bool(seen.any()):
            return seen
        batch_mean = total / count.clamp(min=1)[:, None]
        updated = (self.momentum * batch_mean + (1 - self.momentum) * self.prototypes.float())
        self.prototypes.copy_(torch.where(seen[:, None], updated, self.prototypes.float()))
        self.num_updates += seen.long()
        return seen

    def extra_repr(self) -> str:
        return f'num_classes={self.num_classes}, dims={self.dims}, momentum={self.momentum}'
