"""The per-frame files ``denseood eval`` writes for the report (``frames/frames.json`` + one ``.npz`` per frame;
written by :mod:`denseood.commands.eval.frames`, read by :mod:`.build`). Standard library only."""
from __future__ import annotations

FRAMES_DIR = "frames"          # under the run folder
FRAMES_JSON = "frames.json"    # {"scores", "thumb_width", "frames": [{name, file, height, width, n_anomaly, ...}]}
NO_INSTANCE = 65535            # histogram group of anomaly pixels outside every ground-truth instance
REPORT_NAME = "report.html"    # written by every ``denseood eval`` into --out
