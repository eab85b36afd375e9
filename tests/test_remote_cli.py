"""End to end, as a user runs it: ``sidecar extract --engine remote`` against llama_cpp.server.

The server is the real one that ships with llama-cpp-python, serving the default GGUF on
loopback, started the way its docs say (no alias: it lists the model by its path). It answers
500 to ``response_format: json_schema``, ignores the model name and has a 2,048-token context
by default; before the fix every document failed with 0 records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MINUTES = """# Kickoff: Harbor brochure

## Action items
- [ ] Lena to send the print quote by Friday
- [ ] Book the photographer for the harbor shoot
"""


def test_extract_remote_against_llama_cpp_server(tmp_path: Path, default_model: Path) -> None:
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "kickoff.md").write_text(MINUTES)
        # ~12 KB: one chunk for the engine's default 8,192-token context, too long for the
        # server's 2,048 (the server says so; the engine re-chunks)
        (docs / "report.md").write_text("# Status report\n\n" + "".join(
            f"Section {i}: the venue, the catering and the printing were discussed at length "
            f"and nothing was decided about them in meeting number {i}.\n" for i in range(90))
            + "\n## Action items\n- [ ] Lena to send the revised budget by Friday\n")
        env = {**os.environ, "SIDECAR_REMOTE_API_KEY": ""}
        proc = subprocess.run(
            [sys.executable, "-m", "sidecar", "extract", "--engine", "remote",
             "--remote-base-url", base, "--remote-model", "smol", "--types", "tasks",
             "--data-dir", str(tmp_path / "data"), str(docs)],
            capture_output=True, text=True, timeout=600, env=env)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    records = [x for x in lines if x.get("type") == "tool_call"]
    problems = [x for x in lines if "problem" in x or "skipped" in x]
    notices = [x["notice"] for x in lines if "notice" in x]
    assert problems == [], problems
    assert records, (proc.stdout, proc.stderr)
    titles = [r["data"]["title"] for r in records]
    assert any("print quote" in t or "photographer" in t for t in titles), titles
    for r in records:  # grounded in the document, not invented or copied from the prompt
        assert r["table"] == "tasks" and r["source"]["grounded"], r
    # the user is told what the server lacks and what the engine did about it
    assert any("does not accept response_format json_schema" in n for n in notices), notices
    assert any("'smol'" in n and str(default_model) in n for n in notices), notices
    assert any("context of 2048 tokens, not 8192" in n for n in notices), notices
    assert {r["file"] for r in records} == {str(docs / "kickoff.md"), str(docs / "report.md")}
