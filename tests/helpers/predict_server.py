"""A small Immich-compatible /predict server for the remote-index tests (127.0.0.1 only).

It answers like Immich's service (multipart `entries` + `image`/`text`; embeddings as JSON strings;
OCR boxes normalised; imageHeight/imageWidth), running this repo's real pipelines. The tests use
the project's `serve` command instead when it exists; this stand-in keeps them runnable without it.

    python -m tests.helpers.predict_server PORT
"""

from __future__ import annotations

import json
import sys

import numpy as np


def _emb(v: np.ndarray) -> str:
    return json.dumps([float(x) for x in np.asarray(v, dtype=np.float32)], separators=(",", ":"))


def make_app(session):
    import bottle

    from hailo_immich_cli import clip, faces
    from hailo_immich_cli.imaging import decode_image

    app = bottle.Bottle()

    @app.get("/ping")
    def ping():
        bottle.response.content_type = "text/plain; charset=utf-8"
        return "pong"

    @app.post("/predict")
    def predict():
        entries = json.loads(bottle.request.forms.get("entries"))
        upload = bottle.request.files.get("image")
        out: dict = {}
        if upload is None:
            text = bottle.request.forms.get("text")
            model = entries["clip"]["textual"]["modelName"]
            vec = clip.encode_texts(session, [text], model=clip.paired_model(session.recipes, model, clip.TEXTUAL)).vectors[0]
            out["clip"] = _emb(vec)
        else:
            image = decode_image(upload.file.read())
            rgb = image.rgb
            if "clip" in entries:
                model = entries["clip"]["visual"]["modelName"]
                out["clip"] = _emb(clip.encode_images(session, [rgb], model=clip.paired_model(session.recipes, model, clip.VISUAL)).vectors[0])
            if "facial-recognition" in entries:
                opts = entries["facial-recognition"]["detection"].get("options", {})
                result = faces.analyze_faces(session, rgb, min_score=opts.get("minScore"))
                out["facial-recognition"] = [
                    {"boundingBox": dict(zip(("x1", "y1", "x2", "y2"), (float(np.round(v)) for v in f.box))),
                     "embedding": _emb(f.embedding), "score": f.score}
                    for f in result.faces
                ]
            if "ocr" in entries:
                from hailo_immich_cli import ocr

                result = ocr.read_text(session, rgb)
                h, w = rgb.shape[:2]
                boxes = [float(v) for line in result.lines for v in (np.asarray(line.box) / [w, h]).reshape(-1)]
                out["ocr"] = {"box": boxes, "text": [l.text for l in result.lines],
                              "boxScore": [l.box_score for l in result.lines], "textScore": [l.text_score for l in result.lines]}
            out["imageHeight"], out["imageWidth"] = image.height, image.width
        bottle.response.content_type = "application/json"
        return json.dumps(out, separators=(",", ":"))

    return app


def main() -> None:
    import bottle

    from hailo_immich_cli.recipes import RecipeBook
    from hailo_immich_cli.session import SessionManager
    from hailo_immich_cli.settings import Settings

    port = int(sys.argv[1])
    settings = Settings.load()
    session = SessionManager(settings, RecipeBook.load(settings.recipes_dir))
    bottle.run(make_app(session), host="127.0.0.1", port=port, server="wsgiref", quiet=True)


if __name__ == "__main__":
    main()
