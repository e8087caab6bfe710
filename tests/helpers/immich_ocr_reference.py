"""Immich's official OCR pipeline, rebuilt for parity tests from the library it calls (RapidOCR 3.6.0).

The parts Immich delegates (DB post-processing, recognition batching/resizing, CTC decoding) are
RapidOCR's own classes; the parts Immich writes itself (resize + normalisation, box sort, PIL
perspective crops, score filter) follow the behaviour documented in
../shared/research/immich-protocol.md §5.6/§5.7, written independently here.

RapidOCR is a test-only tool and not installed by default (its wheel pulls the non-headless OpenCV):
    /work/venv/bin/pip install --no-deps rapidocr==3.6.0 && /work/venv/bin/pip install shapely omegaconf colorlog tqdm six pyyaml
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image


@dataclass
class ReferenceOutput:
    box: np.ndarray  # (N, 8) pixels, Immich's response order
    text: list[str]
    box_score: np.ndarray  # as Immich reports it (detector order, filtered by the sorted keep mask)
    text_score: np.ndarray


class ImmichOcrReference:
    def __init__(self, det_path: str, rec_path: str, dict_path: str, threads: int = 2):
        from rapidocr.ch_ppocr_det.utils import DBPostProcess
        from rapidocr.ch_ppocr_rec.main import TextRecognizer
        from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode
        from rapidocr.utils.typings import LangRec
        from rapidocr.utils.vis_res import VisRes

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
        self.det = ort.InferenceSession(det_path, opts, providers=["CPUExecutionProvider"])
        rec_session = ort.InferenceSession(rec_path, opts, providers=["CPUExecutionProvider"])
        self.post = DBPostProcess(thresh=0.3, box_thresh=0.5, max_candidates=1000, unclip_ratio=1.6, use_dilation=True, score_mode="fast")
        VisRes.__init__ = lambda self, **kwargs: None  # Immich disables RapidOCR's visualiser the same way
        rec = TextRecognizer.__new__(TextRecognizer)
        rec.session = lambda batch: rec_session.run(None, {rec_session.get_inputs()[0].name: batch})[0]
        rec.postprocess_op = CTCLabelDecode(character_path=dict_path)
        rec.rec_batch_num, rec.rec_image_shape = 6, (3, 48, 320)
        rec.cfg = SimpleNamespace(lang_type=LangRec.CH, font_path=None)
        self.rec = rec

    def _transform(self, img: Image.Image, max_res: int) -> np.ndarray:
        short = img.height if img.height < img.width else img.width
        ratio = min(float(max_res) / short, 1.0)
        rh, rw = int(img.height * ratio), int(img.width * ratio)
        rh, rw = int(round(rh / 32) * 32), int(round(rw / 32) * 32)
        x = cv2.cvtColor(np.array(img.resize((rw, rh), resample=Image.Resampling.LANCZOS), dtype=np.float32), cv2.COLOR_RGB2BGR)
        x -= np.array([0.5, 0.5, 0.5], np.float32)
        x *= np.float32(1.0) / (np.array([0.5, 0.5, 0.5], np.float32) * 255.0)
        return x.transpose(2, 0, 1)[None]

    @staticmethod
    def _sort(b: np.ndarray) -> np.ndarray:
        ys = np.argsort(b[:, 0, 1], kind="stable")
        sy = b[ys, 0, 1]
        ids = np.empty(len(b), np.int32)
        ids[0] = 0
        np.cumsum(np.abs(np.diff(sy)) >= 10, out=ids[1:])
        return b[ys[np.argsort(ids[ys] * 1e6 + b[ys, 0, 0], kind="stable")]]

    @staticmethod
    def _crops(img: Image.Image, boxes: np.ndarray) -> list[np.ndarray]:
        out = []
        for q in boxes:
            w = int(max(np.linalg.norm(q[1] - q[0]), np.linalg.norm(q[2] - q[3])))
            h = int(max(np.linalg.norm(q[0] - q[3]), np.linalg.norm(q[1] - q[2])))
            src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
            rows = []
            for (x, y), (u, v) in zip(src, q.astype(np.float32)):
                rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
                rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
            hom = np.linalg.svd(np.array(rows, np.float32))[2][-1].reshape(3, 3)
            hom = hom / hom[2, 2]
            crop = img.transform((w, h), Image.Transform.PERSPECTIVE, tuple(hom.reshape(-1)[:8].tolist()), Image.Resampling.BICUBIC)
            if crop.height / crop.width >= 1.5:
                crop = crop.rotate(90, expand=True)
            out.append(cv2.cvtColor(np.asarray(crop), cv2.COLOR_RGB2BGR))
        return out

    def __call__(self, rgb: np.ndarray, min_score: float = 0.8, max_res: int = 736, box_thresh: float = 0.5) -> ReferenceOutput:
        from rapidocr.ch_ppocr_rec.typings import TextRecInput

        img = Image.fromarray(rgb)
        empty = ReferenceOutput(np.zeros((0, 8), np.float32), [], np.zeros(0, np.float32), np.zeros(0))
        if img.width < 32 or img.height < 32:
            return empty
        self.post.box_thresh = box_thresh  # Immich's configure(minScore=...)
        pred = self.det.run(None, {"x": self._transform(img, max_res)})[0]
        boxes, scores = self.post(pred, (img.height, img.width))
        if len(boxes) == 0:
            return empty
        boxes = self._sort(np.asarray(boxes, np.float32))
        scores = np.array(scores, np.float32)
        rec = self.rec(TextRecInput(img=self._crops(img, boxes)))
        text_scores = np.array(rec.scores)
        keep = text_scores > min_score
        return ReferenceOutput(boxes.reshape(-1, 8)[keep], [t for t, k in zip(rec.txts, keep) if k], scores[keep], text_scores[keep])
