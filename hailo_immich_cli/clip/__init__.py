"""CLIP: image and text embeddings in one space (tokenizers, host-side text weights); `pipeline` runs them."""
