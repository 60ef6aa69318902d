"""`kubewrit records export` then `kubewrit verify --export`, as an auditor runs them."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import Server


def exported(server: Server, tmp_path: Path) -> tuple[list[str], Path]:
    for amount in (45, 340, 1200, 45, 60):
        server.decide(tool="process_refund", args={"amount": amount})
    path = tmp_path / "export.jsonl"
    server.kubewrit("records", "export", "-o", str(path))
    key = tmp_path / "key.pub"
    key.write_text(server.kubewrit("keys", "public").stdout)
    return path.read_text().splitlines(keepends=True), key


def verify(
    server: Server, tmp_path: Path, lines: list[str], key: Path, name: str = "checked"
) -> tuple[int, str]:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(lines))
    result = server.kubewrit("verify", "--export", str(path), "--public-key", str(key), check=False)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    return result.returncode, output


def test_a_cut_tail_of_an_export_is_detected(server: Server, tmp_path: Path) -> None:
    lines, key = exported(server, tmp_path)
    code, output = verify(server, tmp_path, lines, key)
    assert code == 0 and "verified 6 records" in output, output
    cuts = range(1, len(lines) - 1)
    with ThreadPoolExecutor(2) as pool:  # one `kubewrit verify` process per cut, two at a time
        results = pool.map(
            lambda cut: verify(server, tmp_path, lines[:-cut], key, f"cut{cut}"), cuts
        )
        for cut, (code, cut_output) in zip(cuts, results, strict=True):
            assert code == 1 and "truncated" in cut_output, (cut, cut_output)
    assert "tail signed by the trailer" in output and "cannot be ruled out" not in output
    key_id = next(json.loads(line)["key_id"] for line in lines if '"key_id"' in line)
    assert f"key {key_id}," in output  # which key signed the chain


def test_an_export_without_a_signed_end_says_a_cut_cannot_be_ruled_out(
    server: Server, tmp_path: Path
) -> None:
    lines, key = exported(server, tmp_path)
    records = [line for line in lines if '"chain"' in line and '"anchor"' not in line]
    code, output = verify(server, tmp_path, records[:-2], key)
    assert code == 0
    assert "no anchor or trailer covers this chain: a cut tail cannot be ruled out" in output


def test_malformed_lines_are_findings_not_tracebacks(server: Server, tmp_path: Path) -> None:
    lines, key = exported(server, tmp_path)
    record = json.loads(lines[2])
    for field, value, finding in (
        ("signature", 5, "line 3 chain {chain} seq 1: malformed"),
        ("seq", "one", "line 3 chain {chain}: malformed"),
        ("hash", None, "line 3 chain {chain} seq 1: malformed"),
    ):
        damaged = [*lines[:2], json.dumps({**record, field: value}) + "\n", *lines[3:]]
        code, output = verify(server, tmp_path, damaged, key)
        assert code == 1 and finding.format(chain=record["chain"]) in output, output
    code, output = verify(server, tmp_path, [*lines[:3], "{not json\n", *lines[4:]], key)
    assert code == 1 and "line 4: malformed: not a JSON line" in output, output
