"""Shipping the student: export (Hugging Face folder + model card, GGUF + Ollama Modelfile, Hub push) and
serve-model (the student behind an OpenAI-compatible endpoint)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from distill.cli.common import ConfigOpt, RunDirOpt, SetOpt, app, console, fail, guard, setup
from distill.config import ConfigError

StudentOpt = Annotated[Optional[str], typer.Option(
    "--student", help="A ladder candidate's name (default: the report's chosen student, or the only one).")]


@app.command()
def export(fmt: Annotated[Optional[list[str]], typer.Option(
               "--format", "-f", help="What to write (repeatable; default export.formats): hf = Hugging Face folder "
               "(safetensors, tokenizer, model card README.md with the eval table); gguf = one GGUF file for llama.cpp / "
               "Ollama (type: export.gguf_type, q8_0 by default) and an Ollama Modelfile.")] = None,
           student: StudentOpt = None, config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """The distilled student as files to deploy -> export/ (hf/, <name>.<type>.gguf, Modelfile); with
    export.push_model, uploaded to export.hub_model_repo."""
    from distill.stages import export as stage

    ctx = setup(config, run_dir, set, new=False)
    out = guard(lambda c: stage.run(c, student=student, formats=fmt), ctx)
    for what, path in (("Hugging Face folder", out.hf), ("GGUF", out.gguf), ("Ollama Modelfile", out.modelfile)):
        if path:
            console.print(f"{what}: {path}", highlight=False)
    for note in out.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


@app.command("serve-model")
def serve_model(student: StudentOpt = None,
                host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 to serve other machines).")] = "127.0.0.1",
                port: Annotated[int, typer.Option(help="Port of the OpenAI-compatible endpoint.")] = 8080,
                n_ctx: Annotated[int, typer.Option(help="Context window in tokens.")] = 2048,
                threads: Annotated[Optional[int], typer.Option(help="CPU threads (default: every core).")] = None,
                config: ConfigOpt = None, run_dir: RunDirOpt = None, set: SetOpt = None):
    """Serve the distilled student over the OpenAI protocol (llama.cpp server on its GGUF, exported first if
    missing) until interrupted. On a GPU, serve export/hf with `vllm serve` instead (README)."""
    from distill.stages import export as stage
    from distill.teacher import TeacherError
    from distill.teacher.gguf_server import engine_of, port_in_use, serve_until_stopped, server_cmd

    if not 1 <= port <= 65535:
        fail(f"--port {port}: not a TCP port (1-65535)")
    if port_in_use(host, port):
        fail(f"--port {port}: {host}:{port} is in use by another process: choose another port")
    ctx = setup(config, run_dir, set, new=False)
    try:
        name, scfg = stage.pick_student(ctx, student)
    except ConfigError as e:
        fail(str(e))
    gguf = stage.gguf_path(ctx, name, scfg)
    if not gguf.exists() or gguf.stat().st_mtime < ctx.dir.student(name).joinpath("config.json").stat().st_mtime:
        guard(lambda c: stage.run(c, student=name, formats=["gguf"]), ctx)
    else:
        ctx.close()
    alias = name or scfg.name
    local = ctx.cfg.teacher.endpoint.local
    cmd = server_cmd(engine_of(local), gguf, alias, host=host, port=port, n_ctx=n_ctx, threads=threads,
                     slots=local.parallel)
    probe = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/v1"
    try:  # announced once it answers on that port; stopped with this process (Ctrl-C or SIGTERM)
        code = serve_until_stopped(cmd, probe, "llama-server", lambda: console.print(
            f"serving {gguf} at http://{host}:{port}/v1 as model '{alias}' (Ctrl-C stops)", highlight=False))
    except TeacherError as e:
        fail(str(e))
    raise typer.Exit(code)
