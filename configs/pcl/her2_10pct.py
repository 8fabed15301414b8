# Short name for the headline setting: PCL on the HER2 point dataset with 10% of cells annotated.
#   python tools/train.py configs/pcl/her2_10pct.py
_base_ = './pcl_vig-s_300e_her2-10pct.py'
