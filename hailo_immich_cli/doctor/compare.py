"""`doctor --compare`: each configured Hailo recipe next to its CPU reference (`cpu_reference` in the
recipe: the same network in float) on the sample photos, through the product pipelines.

Agreement measures, per task: face detection box IoU and landmark distance; recognition cosine;
CLIP image/text cosine and zero-shot top-1 agreement; OCR text match and character error rate.
When agreement is poor every known cause (hypotheses.py) is tried as a recipe variant; the one that
brings agreement back is named with its recipe setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from hailo_immich_cli.clip import pipeline as clip
from hailo_immich_cli.clip.task import TEXTUAL, VISUAL
from hailo_immich_cli.doctor.hypotheses import Hypothesis, hypotheses_for
from hailo_immich_cli.doctor.samples import ASTRONAUT_LANDMARKS, LABELS, PROMPTS, all_samples, photos
from hailo_immich_cli.errors import HailoImmichError
from hailo_immich_cli.faces.detect import run_detector
from hailo_immich_cli.faces.embed import aligned_crops, embed_crops
from hailo_immich_cli.faces.task import DETECTION as FACE_DETECTION, RECOGNITION as FACE_RECOGNITION
from hailo_immich_cli.ocr.pipeline import read_text
from hailo_immich_cli.ocr.task import DETECTION as OCR_DETECTION, RECOGNITION as OCR_RECOGNITION
from hailo_immich_cli.models.recipes import Recipe, RecipeBook
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.tensors import l2_normalize

# Agreement bounds: quantised Hailo networks land well inside them; each known cause lands far outside.
MIN_IOU = 0.8
MAX_LANDMARK = 0.05  # mean landmark distance / reference box diagonal
MIN_COSINE = 0.95
MAX_CER = 0.05
MIN_TOP1 = 1.0


@dataclass
class Outcome:
    metrics: dict[str, Any]
    ok: bool
    score: float  # higher is closer to the reference; ranks hypotheses
    detail: str = ""


@dataclass
class Comparison:
    recipe: str
    reference: str | None
    task: str
    verdict: str  # agree | disagree | error | no-reference | reference-missing | not-run
    metrics: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    cause: str | None = None
    fix: str | None = None
    tried: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


# ---- small metrics ------------------------------------------------------------------------------


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def cer(reference: str, text: str) -> float:
    """Character error rate: Levenshtein distance / reference length."""
    if not reference:
        return 0.0 if not text else 1.0
    row = np.arange(len(text) + 1)
    for i, ch in enumerate(reference, 1):
        new = np.empty_like(row)
        new[0] = i
        cost = np.array([0 if ch == t else 1 for t in text])
        for j in range(1, len(text) + 1):
            new[j] = min(row[j] + 1, new[j - 1] + 1, row[j - 1] + cost[j - 1])
        row = new
    return float(row[-1]) / len(reference)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(l2_normalize(np.asarray(a, np.float32)) * l2_normalize(np.asarray(b, np.float32)), axis=-1)


def _r(value: float) -> float:
    return round(float(value), 4)


# ---- per task: reference once, then the Hailo recipe (or a variant of it) -----------------------


class Evaluator:
    """prepare() runs the CPU reference once; measure() runs a Hailo recipe (or a variant) against it."""

    def __init__(self, session: SessionManager, hailo: Recipe, reference: Recipe):
        self.session, self.hailo, self.reference = session, hailo, reference

    def prepare(self) -> None: ...

    def measure(self, session: SessionManager, recipe: Recipe) -> Outcome: ...


class FaceDetection(Evaluator):
    def prepare(self) -> None:
        self.threshold = float(self.hailo.postprocess.get("score_threshold", 0.5))
        self.expected = [run_detector(self.session, self.reference, s.rgb, self.threshold).detections for s in photos()]

    def measure(self, session: SessionManager, recipe: Recipe) -> Outcome:
        ious, marks, counts = [], [], [0, 0]
        for sample, want in zip(photos(), self.expected):
            got = run_detector(session, recipe, sample.rgb, self.threshold).detections
            counts[0] += len(want)
            counts[1] += len(got)
            for i in range(len(want)):
                overlaps = [iou(want.boxes[i], got.boxes[j]) for j in range(len(got))]
                best = int(np.argmax(overlaps)) if overlaps else -1
                ious.append(overlaps[best] if overlaps else 0.0)
                if best >= 0:
                    box = want.boxes[i]
                    diagonal = math.hypot(box[2] - box[0], box[3] - box[1])
                    marks.append(float(np.mean(np.linalg.norm(want.landmarks[i] - got.landmarks[best], axis=-1))) / diagonal)
        if not counts[0]:
            return Outcome({"faces (reference/hailo)": f"0/{counts[1]}"}, counts[1] == 0, 0.0 if counts[1] == 0 else -1.0,
                           "the reference found no face in the samples: nothing to compare boxes on")
        mean_iou = float(np.mean(ious))
        landmark = float(np.mean(marks)) if marks else 1.0
        ok = counts[0] == counts[1] and min(ious) >= MIN_IOU and landmark <= MAX_LANDMARK
        return Outcome({"faces (reference/hailo)": f"{counts[0]}/{counts[1]}", "box IoU": _r(mean_iou), "landmark distance": _r(landmark)},
                       ok, mean_iou - landmark - abs(counts[0] - counts[1]))


def _mirrored_face() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut face and its mirror image (landmarks re-labelled left/right)."""
    rgb = photos()[0].rgb
    flipped = np.ascontiguousarray(rgb[:, ::-1])
    marks = ASTRONAUT_LANDMARKS.copy()
    marks[:, 0] = rgb.shape[1] - 1 - marks[:, 0]
    return flipped, marks[[1, 0, 2, 4, 3]]


class FaceRecognition(Evaluator):
    def _crops(self, recipe: Recipe) -> np.ndarray:
        rgb = photos()[0].rgb
        flipped, marks = _mirrored_face()
        return np.concatenate([aligned_crops(rgb, ASTRONAUT_LANDMARKS[None], recipe), aligned_crops(flipped, marks[None], recipe)])

    def prepare(self) -> None:
        self.expected = embed_crops(self.session, self.reference, self._crops(self.reference)).vectors

    def measure(self, session: SessionManager, recipe: Recipe) -> Outcome:
        got = embed_crops(session, recipe, self._crops(recipe)).vectors
        cos = _cosines(self.expected, got)
        return Outcome({"recognition cosine": _r(cos.min())}, bool(cos.min() >= MIN_COSINE), float(cos.min()))


def _present(session: SessionManager, recipe_id: str | None) -> bool:
    if not recipe_id:
        return False
    try:
        recipe = session.recipes.get(recipe_id)
    except HailoImmichError:
        return False
    return all(session.files.find(recipe, spec) is not None for spec in recipe.files)


class ClipVisual(Evaluator):
    def prepare(self) -> None:
        self.images = [s.rgb for s in all_samples()]
        self.expected = clip.encode_images(self.session, self.images, self.reference.id).vectors
        text = clip.declared_pair(self.reference)
        self.labels = clip.encode_texts(self.session, list(LABELS), text).vectors if _present(self.session, text) else None

    def measure(self, session: SessionManager, recipe: Recipe) -> Outcome:
        got = clip.encode_images(session, self.images, recipe.id).vectors
        cos = _cosines(self.expected, got)
        metrics: dict[str, Any] = {"image cosine": _r(cos.min())}
        ok = cos.min() >= MIN_COSINE
        if self.labels is not None:
            top1 = float(np.mean(np.argmax(self.expected @ self.labels.T, 1) == np.argmax(got @ self.labels.T, 1)))
            metrics["zero-shot top-1 agreement"] = _r(top1)
            ok = ok and top1 >= MIN_TOP1
        return Outcome(metrics, bool(ok), float(cos.min()))


class ClipTextual(Evaluator):
    def prepare(self) -> None:
        self.expected = clip.encode_texts(self.session, list(PROMPTS), self.reference.id).vectors
        visual = clip.declared_pair(self.reference)
        self.images = clip.encode_images(self.session, [s.rgb for s in all_samples()], visual).vectors if _present(self.session, visual) else None

    def measure(self, session: SessionManager, recipe: Recipe) -> Outcome:
        got = clip.encode_texts(session, list(PROMPTS), recipe.id).vectors
        cos = _cosines(self.expected, got)
        metrics: dict[str, Any] = {"text cosine": _r(cos.min())}
        ok = cos.min() >= MIN_COSINE
        if self.images is not None:
            top1 = float(np.mean(np.argmax(self.images @ self.expected.T, 1) == np.argmax(self.images @ got.T, 1)))
            metrics["zero-shot top-1 agreement"] = _r(top1)
            ok = ok and top1 >= MIN_TOP1
        return Outcome(metrics, bool(ok), float(cos.min()))


class Ocr(Evaluator):
    """Detection is judged with the CPU recogniser reading its boxes, recognition on the CPU detector's boxes."""

    def _partner(self) -> str:
        return self.session.recipes.default(OCR_PARTNER[self.hailo.task], "cpu").id

    def _read(self, session: SessionManager, recipe_id: str) -> list[str]:
        page = all_samples()[-1].rgb
        names = {"detector": recipe_id, "recognizer": self._partner()} if self.hailo.task == OCR_DETECTION else \
            {"detector": self._partner(), "recognizer": recipe_id}
        return [line.text for line in read_text(session, page, **names).lines]

    def prepare(self) -> None:
        self.expected = self._read(self.session, self.reference.id)

    def measure(self, session: SessionManager, recipe: Recipe) -> Outcome:
        got = self._read(session, recipe.id)
        matched = sum(1 for a, b in zip(self.expected, got) if a == b)
        error = cer("\n".join(self.expected), "\n".join(got))
        metrics = {"text match": f"{matched}/{max(len(self.expected), len(got))}", "CER": _r(error)}
        return Outcome(metrics, error <= MAX_CER and len(got) == len(self.expected), -error)


OCR_PARTNER = {OCR_DETECTION: OCR_RECOGNITION, OCR_RECOGNITION: OCR_DETECTION}  # the other step an OCR check runs
EVALUATORS: dict[str, type[Evaluator]] = {
    FACE_DETECTION: FaceDetection, FACE_RECOGNITION: FaceRecognition, VISUAL: ClipVisual,
    TEXTUAL: ClipTextual, OCR_DETECTION: Ocr, OCR_RECOGNITION: Ocr,
}


# ---- running recipes and their variants -----------------------------------------------------


def _variant_session(session: SessionManager, variant: Recipe) -> SessionManager:
    """A session whose book has `variant` under the recipe's id, sharing the open device."""
    book = RecipeBook([*(r for r in session.recipes if r.id != variant.id), variant])
    return SessionManager(session.settings, book, backends={"hailo": session.backend("hailo"), "cpu": session.backend("cpu")})


def _release(session: SessionManager) -> None:
    for model in session.loaded().values():
        model.close()


def _attempt(run: Callable[[], Outcome]) -> Outcome:
    try:
        return run()
    except HailoImmichError as exc:
        return Outcome({}, False, -math.inf, f"{type(exc).__name__}: {exc}")


def _try_hypothesis(session: SessionManager, evaluator: Evaluator, hypothesis: Hypothesis) -> Outcome:
    variant = _variant_session(session, hypothesis.variant)
    try:
        return _attempt(lambda: evaluator.measure(variant, hypothesis.variant))
    finally:
        _release(variant)


def compare_one(session: SessionManager, hailo: Recipe, reference: Recipe) -> Comparison:
    row = Comparison(hailo.id, reference.id, hailo.task, "agree")
    evaluator = EVALUATORS[hailo.task](session, hailo, reference)
    try:
        evaluator.prepare()
    except HailoImmichError as exc:
        return Comparison(hailo.id, reference.id, hailo.task, "error", detail=f"the CPU reference failed: {exc}")
    baseline = _attempt(lambda: evaluator.measure(session, hailo))
    row.metrics, row.detail = baseline.metrics, baseline.detail
    if baseline.ok:
        return row
    row.verdict = "disagree"
    model_path = session.files.find(hailo, hailo.file("model"))
    best: tuple[Outcome, Hypothesis] | None = None
    for hypothesis in hypotheses_for(hailo, model_path):
        outcome = _try_hypothesis(session, evaluator, hypothesis)
        row.tried.append({"cause": hypothesis.cause, "agrees": outcome.ok, "metrics": outcome.metrics})
        if outcome.ok and (best is None or outcome.score > best[0].score):
            best = (outcome, hypothesis)
    if best is None:
        row.cause = "none of the known causes fits"
        row.fix = "paste this report (hailo-immich doctor --compare --markdown report.md) into an issue"
    else:
        row.cause, row.fix = best[1].cause, best[1].fix
        row.detail = (row.detail + "; " if row.detail else "") + "with the fix: " + ", ".join(f"{k} {v}" for k, v in best[0].metrics.items())
    return row


def _fetch_missing(settings: Settings, recipes: list[Recipe]) -> list[str]:
    from hailo_immich_cli.models.fetch import Fetcher
    from hailo_immich_cli.models.files import ModelFiles

    results = Fetcher(ModelFiles(settings)).fetch(recipes)
    return [f"{r.recipe_id}: {r.error}" for r in results if r.status == "failed"]


def _references(book: RecipeBook, reference: Recipe) -> list[Recipe]:
    """The reference and what its check also runs (the other CLIP tower for zero-shot, the OCR partner)."""
    needed = [reference]
    pair = clip.declared_pair(reference)
    if pair:
        try:
            needed.append(book.get(pair))
        except HailoImmichError:
            pass
    if reference.task in OCR_PARTNER:
        needed.append(book.default(OCR_PARTNER[reference.task], "cpu"))
    return needed


def run_compare(settings: Settings, book: RecipeBook, configured: list[Recipe], *, only: list[str] | None = None,
                fetch: bool = False, device_ok: bool = True) -> list[dict[str, Any]]:
    """One row per configured Hailo recipe (or per recipe in `only`)."""
    hailo = [r for r in configured if r.backend == "hailo"] if not only else [book.get(rid) for rid in only]
    rows: list[Comparison] = []
    with SessionManager(settings, book) as session:
        for recipe in hailo:
            ref_id = recipe.raw.get("cpu_reference")
            if not ref_id:
                rows.append(Comparison(recipe.id, None, recipe.task, "no-reference",
                                       detail="the recipe declares no cpu_reference", fix=f"add cpu_reference = \"<CPU recipe id>\" to recipe {recipe.id}"))
                continue
            reference = book.get(ref_id)
            missing_hailo = [s.name for s in recipe.files if session.files.find(recipe, s) is None]
            if not device_ok or missing_hailo:
                why = f"files missing: {', '.join(missing_hailo)}" if missing_hailo else "the device checks above failed"
                rows.append(Comparison(recipe.id, ref_id, recipe.task, "not-run", detail=why,
                                       fix=f"hailo-immich fetch-models --recipe {recipe.id}" if missing_hailo else "fix the failed checks first"))
                continue
            needed = _references(book, reference)
            absent = [r for r in needed if not all(session.files.find(r, s) is not None for s in r.files)]
            if absent and fetch:
                failures = _fetch_missing(settings, absent)
                if failures:
                    rows.append(Comparison(recipe.id, ref_id, recipe.task, "reference-missing", detail="; ".join(failures)))
                    continue
            elif absent:
                names = " ".join(f"--recipe {r.id}" for r in absent)
                rows.append(Comparison(recipe.id, ref_id, recipe.task, "reference-missing",
                                       detail=f"CPU reference files missing: {', '.join(r.id for r in absent)}",
                                       fix=f"hailo-immich doctor --compare --fetch (or: hailo-immich fetch-models {names})"))
                continue
            rows.append(compare_one(session, recipe, reference))
    return [r.as_dict() for r in rows]
