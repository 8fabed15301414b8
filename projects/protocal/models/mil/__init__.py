"""MIL counting (issue 13): counter (stage 1), tile classifier + top-k hook (stage 2), U-Net
decode head (stage 3) and the tile helpers they share. Registered in the mmseg registries."""
from .counter import MILCounter, gap_gmp, mil_mlp_head
from .tile_classifier import MILTileClassifier
from .tiling import (balance_selection, extract_tiles, tile_grid, tile_heatmap, tile_positions,
                     tile_union_mask, topk_select)
from .topk_hook import MILTopKSamplingHook
from .unet_head import MILUNetHead

__all__ = [
    'MILCounter', 'MILTileClassifier', 'MILTopKSamplingHook', 'MILUNetHead', 'gap_gmp',
    'mil_mlp_head', 'tile_positions', 'tile_grid', 'extract_tiles', 'tile_heatmap',
    'tile_union_mask', 'topk_select', 'balance_selection'
]
