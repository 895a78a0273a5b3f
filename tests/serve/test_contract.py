"""The OpenAPI document is the contract: schemathesis, every check, against a live endpoint on 127.0.0.1.

Marked ``schemathesis`` (its own CI step). The server runs the three smallest zoo models in this
process, with a bearer token, so the auth checks run too. Besides schemathesis' own verdict this
reads its NDJSON report and requires that most schema-valid POSTs to /v1/verify are answered 2xx
and that each schema-valid request that gets a 422 is refused for a rule JSON Schema cannot state.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verinet.serve.engine import VerifyEngine
from verinet.serve.local import serve_local
from verinet.serve.members import LocalMember

from .conftest import serve_config

pytestmark = pytest.mark.schemathesis

HERE = Path(__file__).resolve().parent
TOKEN = "contract-test-token-0123456789"
EXAMPLES = int(os.environ.get("VERINET_SCHEMATHESIS_EXAMPLES", "150"))  # per operation and phase
# 422s a schema-valid request may still get: rules that JSON Schema cannot state (see schemathesis.toml).
NOT_IN_SCHEMA = {
    "bad_question",    # format arith/logic: the question must be a well-formed problem of that family
    "too_many_chars",  # limits.max_chars counts the question, the steps and the answer together
}


def _decode(b: dict | None) -> bytes:
    if not b:
        return b""
    return base64.b64decode(b["$base64"]) if "$base64" in b else str(b.get("string", "")).encode()


def post_cases(report: Path, path: str) -> list[tuple[str, int, str | None]]:
    """(generation mode, status, error code) for every POST to ``path`` that schemathesis sent."""
    out = []
    for line in report.read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if not event or "cases" not in event["recorder"]:
            continue
        rec = event["recorder"]
        for cid, case in rec["cases"].items():
            v = case["value"]
            inter = rec["interactions"].get(cid)
            if v["method"] != "POST" or v["path"] != path or inter is None or inter.get("response") is None:
                continue
            r = inter["response"]
            code = None
            if r["status_code"] >= 400:
                try:
                    code = json.loads(_decode(r.get("content")))["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = "?"
            out.append((v["meta"]["generation"]["mode"], r["status_code"], code))
    return out


def test_schemathesis_all_checks_pass_and_most_valid_posts_are_accepted(tmp_path):
    cfg = serve_config(max_queue=64)
    members = {m.name: LocalMember(m) for m in cfg.ensemble.members}
    engine = VerifyEngine(cfg, members, cfg.ensemble.members, quorum=cfg.ensemble.quorum)
    report = tmp_path / "events.ndjson"
    st = Path(sys.executable).with_name("st")
    with serve_local(cfg, TOKEN, engine=engine, port=0) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        argv = [str(st), "--config-file", str(HERE / "schemathesis.toml"), "run", f"{srv.url}/openapi.json",
                "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", "16", "--workers", "1",
                "--generation-database", "none", "--no-color", "--request-timeout", "60",
                "-H", f"Authorization: Bearer {TOKEN}",
                "--report", "ndjson", "--report-ndjson-path", str(report)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    summary = r.stdout[r.stdout.rfind("SUMMARY"):] if "SUMMARY" in r.stdout else r.stdout[-4000:]
    assert r.returncode == 0, f"schemathesis found failures:\n{r.stdout[-12000:]}\n{r.stderr[-2000:]}"

    cases = post_cases(report, "/v1/verify")
    positive = [c for c in cases if c[0] == "positive"]
    ok = [c for c in positive if 200 <= c[1] < 300]
    refused = collections.Counter(code for _, status, code in positive if status == 422)
    stats = {
        "post_verify_cases": len(cases),
        "post_verify_2xx_share_all": round(sum(200 <= c[1] < 300 for c in cases) / max(1, len(cases)), 3),
        "post_verify_schema_valid": len(positive),
        "post_verify_2xx_share_of_schema_valid": round(len(ok) / max(1, len(positive)), 3),
        "schema_valid_422_by_code": dict(refused),
        "statuses": dict(collections.Counter(c[1] for c in cases)),
    }
    print("schemathesis:", " ".join(summary.split())[-400:])
    print("contract figures:", json.dumps(stats))
    assert len(positive) >= 50, stats
    assert set(refused) <= NOT_IN_SCHEMA, f"schema-valid requests refused for a rule the schema could state: {stats}"
    assert len(ok) / len(positive) > 0.5, f"most schema-valid POSTs must be accepted: {stats}"
