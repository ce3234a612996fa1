"""S2M evaluation beside the anomaly-score rows of ``denseood eval --s2m``.

:meth:`S2MEval.compute` gives the ``"s2m"`` row of results.json ``s2m``:

- the one object metric (``ObjectMetrics(protocol="s2m")``, fed the S2M label map, its full masks,
  confidences and ground-truth instances once per frame): iou, sIoU, PPV, mean_F1, ... plus the pixel metrics
  (ap, fpr95, auroc) of the object-refined anomaly map (see denseood.s2m.pipeline).
  Its ``"paper_protocol"`` entry holds the S2M paper's object protocol on the object-score maps (each mask
  painted with its confidence in [0, 1], :func:`denseood.eval.object_curve.paint_objects`; thresholds
  0:0.01:1): ``best_iou``, ``best_threshold``, ``au_iou``, ``mean_f1`` (ObjectScoreCurve). Its
  ``"instance_ap"`` entry is ``{"oodis": {...}, "coco": {...}}`` (InstanceAPReport, min_size 10, the full
  masks ranked by their confidences; ground-truth instances from the dataset's instance ids where given, else
  8-connected components of ``ood_mask == 1``; void = 255): ``oodis`` is the headline, the number the OoDIS
  scorer gives, ``coco`` the pycocotools mask AP (docs/metrics.md). ``"instance_source"`` counts the frames by
  where their ground-truth instances came from: the reader's ``Sample.meta["instance_source"]`` (LostAndFound:
  "instanceIds" or "label components"), else "dataset instance ids" or "ood_mask components".
The ``"threshold@bestF1"`` baseline row beside it (the S2M score's map thresholded at its best-F1 pixel
threshold, each component one object) is built in pass 2 from the runner's frame cache and pixel row
(:func:`.passes.threshold_pass`); S2MEval keeps no maps and no pixel metric of the raw map.
DDP: every metric reduces across ranks inside ``compute``, which is collective (every rank must call it).

Moved here from ``denseood.s2m.evaluate`` (0.1): it drives the eval metrics, which s2m may not import.
See docs/architecture.md.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from denseood import dist
from denseood.errors import DenseOODError
from denseood.eval import ObjectMetrics, PixelMetrics
from denseood.eval.objects import CURVE_KEYS  # the S2M paper protocol's numbers in ``s2m["paper_protocol"]``

PROTOCOL = "S2M paper protocol: object-score maps, thresholds 0:0.01:1"


class S2MEval:
    """Accumulate the S2M row's object metrics. pixel_mode: PixelMetrics mode of the refined map's pixel
    metrics; min_instance_size: ground-truth components under it become void for the component metrics."""

    def __init__(self, s2m: Any, min_instance_size: int = 100, pixel_mode: str = "streaming") -> None:
        self.s2m = s2m
        self.min_instance_size = int(min_instance_size)
        self.objects = ObjectMetrics(protocol="s2m", step=0.01, min_instance_size=self.min_instance_size,
                                     ap_min_size=10)
        self.refined_pixels = PixelMetrics(mode=pixel_mode)
        self._n_objects = 0
        self._seconds = 0.0
        self._sources: dict[str, int] = {}

    def update(self, image: np.ndarray, anomaly_map: np.ndarray, ood_mask: np.ndarray,
               instances: np.ndarray | None = None, instance_source: str | None = None) -> Any:
        """image (H,W,3) uint8, anomaly_map (H,W) float raw scores, ood_mask (H,W) uint8 0/1/255, instances:
        optional (H,W) int ground-truth instance ids (``Sample.instances``), instance_source: where they came from
        (``Sample.meta["instance_source"]``). Returns the S2MResult of the frame."""
        a = np.asarray(anomaly_map, np.float32)
        m = np.asarray(ood_mask, np.uint8)
        if a.shape != m.shape:
            raise DenseOODError(f"S2MEval.update: anomaly map {a.shape} and ood_mask {m.shape} differ in size")
        res = self.s2m.segment_from_map(image, a)
        self.objects.update(res.instances, m, scores=res.scores, instances=instances, full_masks=res.full_masks())
        src = instance_source or ("ood_mask components" if instances is None else "dataset instance ids")
        self._sources[src] = self._sources.get(src, 0) + 1
        self.refined_pixels.update(res.refined_map, m)
        self._n_objects += len(res)
        self._seconds += float(res.timing.get("total", 0.0))
        return res

    @staticmethod
    def protocol_metrics(row: dict[str, Any]) -> dict[str, Any]:
        """Move the S2M paper protocol's numbers of an ObjectMetrics row into {"protocol": PROTOCOL, best_iou,
        best_threshold, au_iou, mean_f1 (all in [0, 1])}."""
        out: dict[str, Any] = {"protocol": PROTOCOL}
        out.update({k: row.pop(k) for k in CURVE_KEYS})
        return out

    def compute(self) -> dict[str, Any]:
        """The ``"s2m"`` row (collective under torch.distributed)."""
        s2m = dict(self.objects.compute())
        s2m["paper_protocol"] = self.protocol_metrics(s2m)
        sources: dict[str, int] = {}
        for part in dist.gather(self._sources):
            for k, v in part.items():
                sources[k] = sources.get(k, 0) + v
        s2m["instance_source"] = dict(sorted(sources.items()))
        ref = self.refined_pixels.compute()
        for k in ("ap", "fpr95", "auroc", "best_f1"):
            s2m[f"pixel_{k}"] = ref[k]
        n_obj = int(sum(dist.gather(self._n_objects)))
        secs = float(sum(dist.gather(self._seconds)))
        n_img = int(s2m["n_images"])
        s2m.update(objects_per_image=n_obj / max(n_img, 1), seconds_per_image=secs / max(n_img, 1))
        return s2m
