# Plain soft cross-entropy with a single foreground class ("nucleus": stroma, epithelium and other
# merged) on the bundled EndoNuke expert points, 10% annotated: the baseline of
# configs/sel/sel_r18-fpn_20e_endonuke-nucleus-10pct.py. The annotated subset is the same points as
# in the 3-class configs (the dataset samples it on the source classes).
_base_ = '../pointdet/heatmap_r18-fpn_20e_endonuke-10pct.py'
num_classes = 1
classes = ('nucleus', )
metainfo = dict(classes=classes, palette=[(0, 114, 178)])
class_map = dict(stroma='nucleus', epithelium='nucleus', other='nucleus')
model = dict(head=dict(num_classes=num_classes, codec=dict(num_classes=num_classes)))
train_dataloader = dict(dataset=dict(metainfo=metainfo, class_map=class_map))
val_dataloader = dict(dataset=dict(metainfo=metainfo, class_map=class_map))
test_dataloader = dict(dataset=dict(metainfo=metainfo, class_map=class_map))
