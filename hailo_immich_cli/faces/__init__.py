"""Faces: detect (SCRFD, CenterFace), align to the ArcFace template, embed; `pipeline.analyze_faces` runs them."""
