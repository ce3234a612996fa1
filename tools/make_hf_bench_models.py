"""Random SegFormer-B0-sized and Mask2Former-Swin-T-sized models for `denseood bench infer --checkpoint hf:DIR`.

Usage: python tools/make_hf_bench_models.py OUT_DIR   (writes OUT_DIR/segformer_b0 and OUT_DIR/m2f_swin_t; offline)
"""
import sys
from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SegformerConfig,
                          SegformerForSemanticSegmentation, SwinConfig)

out = sys.argv[1]
SegformerForSemanticSegmentation(SegformerConfig(num_labels=19)).save_pretrained(f"{out}/segformer_b0")  # B0 defaults
swin = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                  out_features=["stage1", "stage2", "stage3", "stage4"])
cfg = Mask2FormerConfig(backbone_config=swin, num_labels=19, use_pretrained_backbone=False)
Mask2FormerForUniversalSegmentation(cfg).save_pretrained(f"{out}/m2f_swin_t")
print("ok")
