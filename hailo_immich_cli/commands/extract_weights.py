"""`hailo-immich extract-weights`: the CPU-side text weights of a Hailo text encoder, from the original checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

from hailo_immich_cli.commands._common import ModelsDirOption, handle_errors, load_settings, stderr_console
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import RecipeBook


def register(app: typer.Typer) -> None:
    @app.command("extract-weights")
    @handle_errors
    def extract_weights(
        checkpoint: Path = typer.Argument(..., help="The original checkpoint you downloaded (.safetensors, or a PyTorch .pt/.bin zip)."),
        recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="Id of the text-encoder recipe whose weights to extract."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Where to write the .npz (default: the recipe's place in the models dir)."),
        list_keys: bool = typer.Option(False, "--list-keys", help="Only list the checkpoint's tensors (key, shape, dtype)."),
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """Write the small .npz of text weights (token/positional embeddings, projection) a Hailo text recipe needs."""
        from hailo_immich_cli.clip.weights import extract_text_weights, read_checkpoint, save_npz, weights_spec

        settings = load_settings(models_dir=models_dir)
        if list_keys:
            for key, tensor in sorted(read_checkpoint(checkpoint).items()):
                typer.echo(f"{key}\t{list(tensor.shape)}\t{tensor.dtype}")
            return
        book = RecipeBook.load(settings.recipes_dir)
        if recipe is None:
            choices = [r.id for r in book if r.has_file("weights")]
            raise BadInputError(f"give --recipe (one of: {', '.join(choices)})")
        chosen = book.get(recipe)
        weights_spec(chosen)
        if not chosen.has_file("weights"):
            raise BadInputError(f"recipe {chosen.id} has no file with role 'weights'")
        target = output or ModelFiles(settings).target(chosen, chosen.file("weights"))
        arrays = extract_text_weights(chosen, checkpoint)
        arrays["source_checkpoint"] = np.asarray(checkpoint.name)
        save_npz(arrays, target)
        for name, array in arrays.items():
            if name != "source_checkpoint":
                typer.echo(f"{name}\t{list(array.shape)}")
        typer.echo(f"wrote {target}")
        stderr_console(settings).print(f"recipe {chosen.id} is ready once its HEF is fetched (hailo-immich fetch-models --recipe {chosen.id})")
