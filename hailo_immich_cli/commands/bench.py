"""`hailo-immich bench`: measure this machine (device-only, host, end-to-end) or a running service (--url)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hailo_immich_cli.bench.local import (
    DEFAULT_TASKS,
    TASKS,
    Bench,
    BenchOptions,
    load_images,
)
from hailo_immich_cli.bench.timing import parse_int_list
from hailo_immich_cli.commands._common import (
    BackendOption,
    ModelsDirOption,
    handle_errors,
    load_settings,
    stderr_console,
)
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.models.recipes import RecipeBook


def _tasks(text: str | None, allowed: tuple[str, ...] | list[str], default: tuple[str, ...]) -> tuple[str, ...]:
    if not text:
        return default
    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    for task in tasks:
        if task not in allowed:
            raise BadInputError(f"--task: unknown task '{task}' (choose from {', '.join(allowed)})")
    return tasks


def _host_paths(text: str | None) -> tuple[str, ...]:
    from hailo_immich_cli.imaging import HOST_PATHS

    paths = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    bad = [p for p in paths if p not in HOST_PATHS]
    if bad:
        raise BadInputError(f"--host-path: unknown path {', '.join(bad)} (choose from {', '.join(HOST_PATHS)})")
    return paths


def _model_names(pairs: list[str]) -> dict[str, str]:
    names = {}
    for pair in pairs:
        task, sep, name = pair.partition("=")
        if not sep or not name:
            raise BadInputError(f"--model-name: expected TASK=NAME (e.g. clip=ViT-B-16-SigLIP__webli), got '{pair}'")
        names[task.strip()] = name.strip()
    return names


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _x(cell: dict[str, Any]) -> str:
    ratio = cell.get("speedup_vs_first")
    return "-" if ratio is None else f"{ratio:.2f}x"


def _id_width(report: dict[str, Any]) -> int:
    """Recipe ids are the provenance: keep them whole in narrow terminals."""
    return min(32, max((len(m["recipe_id"]) for m in report.get("models", [])), default=8))


def _cols(report: dict[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
    """Drop the intra-op column unless --intra-op was swept."""
    return names if report["options"].get("intra_op_threads") else tuple(n for n in names if n != "intra-op")


def _keep(report: dict[str, Any], values: tuple[str, ...], at: int) -> tuple[str, ...]:
    return values if report["options"].get("intra_op_threads") else values[:at] + values[at + 1:]


def _header(console: Console, report: dict[str, Any]) -> None:
    host = report["host"]
    if report["kind"] == "local":
        b = report["backend"]
        versions = ""
        if b["name"] == "hailo":
            versions = f", HailoRT {b.get('hailort_version') or '?'}, driver {b.get('driver_version') or '?'}"
        console.print(f"[bold]backend[/] {b['name']}: {escape(str(b.get('device')))} ({escape(str(b.get('runtime')))}{escape(versions)})")
        if b.get("fallback_reason"):
            console.print(f"[yellow]not on the NPU:[/] {escape(b['fallback_reason'])}")
    else:
        service = report["service"]
        console.print(f"[bold]service[/] {escape(service['url'])}: {escape(str(service.get('root', {}).get('body', '')))}")
        health = service.get("health") or {}
        if health.get("active_backend"):  # our serve describes itself at /health; Immich's has no such route
            console.print(f"[bold]service backend[/] {escape(str(health['active_backend']))} (status {escape(str(health.get('status')))})")
        if health.get("warning"):
            console.print(f"[yellow]service warning:[/] {escape(str(health['warning']))}")
    if report.get("emulated"):
        console.print("[bold red]EMULATED[/]: the hailo_platform in use is a test double; these are not hardware numbers")
    console.print(f"[bold]host[/] {escape(str(host['cpu_model']))}, {host['cores_logical']} logical / {host['cores_physical'] or '?'} physical cores, "
                  f"{host['memory_mib'] or '?'} MiB, Python {host['python']}")
    opts = report["options"]
    bound = f"duration {opts['duration_s']} s" if opts.get("duration_s") else ""
    if opts.get("count"):
        bound += (", " if bound else "") + f"count {opts['count']}"
    console.print(f"[bold]bounds[/] warm-up {opts['warmup']} calls, then {bound} per cell")


def _render_local(console: Console, report: dict[str, Any]) -> None:
    _header(console, report)
    models = Table(title="models (provenance)")
    for col in ("recipe", "task", "backend", "sha256", "device", "load ms"):
        models.add_column(col, min_width=_id_width(report) if col == "recipe" else None)
    for m in report["models"]:
        models.add_row(m["recipe_id"], m["task"], m["backend"], m["model_sha256"][:12], str(m["device"]), _ms(m["load_ms"]))
    console.print(models)
    device_rows = [(m, c) for m in report["models"] for c in m["device_only"]]
    if device_rows:
        table = Table(title="device-only (session.run on a synthetic batch; no pre/post-processing)")
        for col in _cols(report, ("recipe", "batch", "threads", "intra-op", "items/s", "x first", "p50 ms", "p95 ms", "p99 ms", "batches seen", "errors")):
            table.add_column(col, justify="right" if col not in ("recipe", "batches seen") else "left",
                             min_width=_id_width(report) if col == "recipe" else None)
        for m, c in device_rows:
            lat = c["latency_ms"]
            table.add_row(*_keep(report, (m["recipe_id"], str(c["batch"]), str(c["threads"]), str(c["intra_op_threads"] or "-"),
                          f"{c['items_per_s']:.2f}", _x(c), _ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["p99"]),
                          ", ".join(f"{k}x{v}" for k, v in c["batch_sizes"].items()), str(sum(c["errors"].values()) or "")), 3))
        console.print(table)
    for task, data in report["tasks"].items():
        table = Table(title=f"end-to-end {task} on {report['images']['count']} images")
        for col in _cols(report, ("batch", "threads", "intra-op", "images/s", "x first", "p50 ms", "p95 ms", "p99 ms", "found/image", "errors")):
            table.add_column(col, justify="right")
        cost = Table(title=f"{task}: where the time goes, per model (ms per item)")
        for col in _cols(report, ("batch", "threads", "intra-op", "model", "device", "host pre/post", "host share", "batches seen")):
            cost.add_column(col, justify="left" if col in ("model", "batches seen") else "right",
                            min_width=_id_width(report) if col == "model" else None)
        for c in data["cells"]:
            lat = c["latency_ms"]
            keys = _keep(report, (str(c["batch"]), str(c["threads"]), str(c["intra_op_threads"] or "-")), 2)
            table.add_row(*keys, f"{c['items_per_s']:.2f}", _x(c), _ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["p99"]),
                          "-" if c.get("found_per_image") is None else f"{c['found_per_image']:.1f}",
                          str(sum(c["errors"].values()) or ""))
            for rid, v in c["models"].items():
                dev, host = v["device_ms_per_item"], v["host_ms_per_item"]
                share = f"{100 * host / (host + dev):.0f}%" if dev is not None and host is not None and host + dev > 0 else "-"
                cost.add_row(*keys, rid, _ms(dev), _ms(host), share, ", ".join(f"{k}x{n}" for k, n in v["batch_sizes"].items()))
        console.print(table)
        console.print(cost)
        decode = (report["images"].get("decode_ms") or {}).get("p50")
        if decode is not None:
            console.print(f"  image decode (not in the numbers above): p50 {decode:.1f} ms per image")
    if report.get("host_path"):
        console.print(f"[bold]host path[/] {report['host_path']} (end-to-end above; HAILO_IMMICH_HOST_PATH)")
    host = report.get("host_paths")
    if host and host["cells"]:
        table = Table(title="host CPU per image request from the encoded image (decode, prepare, post-process, JSON; device call apart)")
        for col in ("task", "host path", "image", "decoded", "found", "host p50 ms", "mean ms", "min ms", "device-call ms"):
            table.add_column(col, justify="left" if col in ("task", "host path") else "right")
        for c in host["cells"]:
            h = c["host_cpu_ms"]
            table.add_row(c["task"], c["host_path"], c["image"], c["decoded"], str(c["found"]), _ms(h["p50"]), _ms(h["mean"]),
                          _ms(h["min"]), _ms(c["device_call_cpu_ms"]))
        console.print(table)
        for row in host["compare"]:
            console.print(f"  {row['task']}: exact {row['exact_ms']:.2f} ms, fast {row['fast_ms']:.2f} ms per request -> exact/fast {row['exact_over_fast']}x")


def _render_url(console: Console, report: dict[str, Any]) -> None:
    _header(console, report)
    ctl = report["control"]
    console.print(f"[bold]control[/] idle /ping p50 {_ms(ctl['idle_ping']['latency_ms']['p50'])} ms, "
                  f"p95 {_ms(ctl['idle_ping']['latency_ms']['p95'])} ms; client ceiling "
                  f"{ctl['client_ceiling']['calls_per_s']:.0f} req/s at concurrency {ctl['client_ceiling']['concurrency']} "
                  f"(requests rejected before inference; statuses {ctl['client_ceiling']['statuses']})")
    for task, data in report["tasks"].items():
        table = Table(title=f"/predict {task} ({report['options']['model_names'][task]})")
        for col in ("concurrency", "req/s", "x first", "p50 ms", "p95 ms", "p99 ms", "ok", "errors by status", "/ping p95 ms", "/ping >2 s or failed"):
            table.add_column(col, justify="right")
        for c in data["cells"]:
            lat, ping = c["latency_ms"], c["ping_under_load"]
            table.add_row(str(c["concurrency"]), f"{c['requests_per_s']:.2f}", _x(c), _ms(lat["p50"]), _ms(lat["p95"]), _ms(lat["p99"]),
                          str(c["calls"]), ", ".join(f"{k}: {v}" for k, v in c["errors"].items()),
                          _ms(ping["latency_ms"]["p95"]), f"{ping['over_immich_timeout']} of {ping['pings'] + sum(ping['errors'].values())}")
        console.print(table)


def render(console: Console, report: dict[str, Any]) -> None:
    (_render_local if report["kind"] == "local" else _render_url)(console, report)
    for notice in report.get("notices", []):
        console.print(f"[yellow]note:[/] {escape(notice)}")
    if report.get("advice"):
        console.print("[bold]advice[/] (best throughput within the bound, from this sweep only):")
        for item in report["advice"]:
            console.print(f"  {item['scope']}: {escape(item['text'])}")


def register(app: typer.Typer) -> None:
    @app.command("bench")
    @handle_errors
    def bench(
        task: Optional[str] = typer.Option(None, "--task", "-t", help=f"Comma list of {', '.join(TASKS)} (default {','.join(DEFAULT_TASKS)}; with --url: clip)."),
        recipe: Optional[List[str]] = typer.Option(None, "--recipe", "-r", help="Only these recipes (repeatable): device-only for each, end-to-end for their tasks."),
        batch: Optional[str] = typer.Option(None, "--batch", help="Batch sizes to sweep, e.g. 1,2,4,8 (recipe batch; recogniser batch end-to-end)."),
        threads: Optional[str] = typer.Option(None, "--threads", help="Concurrent callers to sweep, e.g. 1,2,4,8 (like MACHINE_LEARNING_REQUEST_THREADS)."),
        intra_op: Optional[str] = typer.Option(None, "--intra-op", help="CPU backend: ONNX Runtime intra-op threads to sweep, e.g. 1,2."),
        images: Optional[Path] = typer.Option(None, "--images", help="Folder of real images for end-to-end (default: synthetic previews)."),
        max_images: int = typer.Option(16, "--max-images", min=1, help="Use at most this many images from --images (at least 1)."),
        warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed calls before each measured cell (0 or more)."),
        duration: Optional[float] = typer.Option(None, "--duration", help="Seconds per measured cell (default 5; 10 with --url)."),
        count: Optional[int] = typer.Option(None, "--count", min=1, help="Calls (requests) per measured cell, at least 1; with --duration, whichever ends first."),
        mode: str = typer.Option("all", "--mode", help="all | device | e2e (local bench only)."),
        max_latency_ms: Optional[float] = typer.Option(None, "--max-latency-ms", help="Latency bound (p95) for the advice."),
        url: Optional[str] = typer.Option(None, "--url", help="Load-test a running ML service (ours or Immich's) at this address instead."),
        concurrency: Optional[str] = typer.Option(None, "--concurrency", help="--url: concurrent connections to sweep (default 1,2,4,8)."),
        timeout: float = typer.Option(60.0, "--timeout", help="--url: per-request timeout, seconds."),
        model_name: Optional[List[str]] = typer.Option(None, "--model-name", help="--url: TASK=IMMICH_MODEL_NAME (default: Immich's defaults)."),
        host_path: Optional[str] = typer.Option(None, "--host-path", help="Also measure host CPU per image request from the encoded image on these host paths, e.g. exact,fast."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (schema: docs/bench.md)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON report to this file."),
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """Measure throughput and latency honestly: device-only, host cost and end-to-end, or a live service."""
        settings = load_settings(backend=backend, models_dir=models_dir)
        err = stderr_console(settings)
        progress = lambda msg: err.print(escape(msg))  # noqa: E731 - one line per measured cell, on stderr
        if duration is not None and duration <= 0:
            raise BadInputError("--duration must be > 0")
        if url:
            from hailo_immich_cli.bench.loadtest import (
                URL_DEFAULT_TASKS,
                URL_TASKS,
                LoadTest,
                UrlOptions,
                image_bytes,
            )

            if recipe or batch or threads or intra_op:
                raise BadInputError("--recipe/--batch/--threads/--intra-op measure this machine; with --url use --concurrency")
            data, source = image_bytes(images, max_images)
            opts = UrlOptions(
                tasks=_tasks(task, URL_TASKS, URL_DEFAULT_TASKS),
                concurrency=tuple(parse_int_list(concurrency, "--concurrency", [1, 2, 4, 8])),
                duration_s=duration if duration is not None else (None if count else 10.0),
                count=count, warmup=warmup, timeout_s=timeout, max_latency_ms=max_latency_ms,
                model_names=_model_names(model_name or []),
            )
            report = LoadTest(url, opts, data, source, progress=progress).run()
        else:
            if mode not in ("all", "device", "e2e"):
                raise BadInputError("--mode must be all, device or e2e")
            if concurrency:
                raise BadInputError("--concurrency is for --url; to sweep local callers use --threads")
            opts_local = BenchOptions(
                tasks=_tasks(task, list(TASKS), DEFAULT_TASKS),
                recipes=tuple(recipe or ()),
                batches=tuple(parse_int_list(batch, "--batch", [1])),
                threads=tuple(parse_int_list(threads, "--threads", [1])),
                intra_op=tuple(parse_int_list(intra_op, "--intra-op", [])) if intra_op else (),
                warmup=warmup,
                duration_s=duration if duration is not None else (None if count else 5.0),
                count=count,
                device_only=mode in ("all", "device"),
                end_to_end=mode in ("all", "e2e"),
                max_latency_ms=max_latency_ms,
                host_paths=_host_paths(host_path),
            )
            image_set = load_images(images, max_images, settings.max_image_pixels) if opts_local.end_to_end else None
            book = RecipeBook.load(settings.recipes_dir)
            encoded = None
            if opts_local.host_paths and images is not None:
                from hailo_immich_cli.bench.loadtest import image_bytes

                encoded = image_bytes(images, 1)[0][0]
            report = Bench(settings, book, opts_local, image_set, progress=progress, encoded=encoded).run()
        text = json.dumps(report, indent=2)
        if output is not None:
            output.write_text(text + "\n", encoding="utf-8")
        if as_json:
            typer.echo(text)
        else:
            render(Console(no_color=settings.no_color), report)
