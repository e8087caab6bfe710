"""OCR: detect text (differentiable binarisation), recognise lines (CTC), order them; `pipeline.read_text` runs them."""
