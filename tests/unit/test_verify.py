"""`kubewrit verify` of exports: a cut tail is detected, malformed input is a finding."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from kubewrit.webhook import chain, export, keys, verify
from kubewrit.webhook.chain import Draft

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def signer() -> keys.Signer:
    return keys.generate()


def build(signer: keys.Signer, chains: dict[str, int]) -> tuple[list[dict[str, Any]], list]:
    records, anchors = [], []
    for name, count in chains.items():
        head = chain.Head(name)
        for i in range(count):
            draft = Draft(kind="decision", decision="PERMIT", agent="a", tool=f"t{i}")
            records.append(head.seal_next(draft, signer).to_dict())
        # Anchors lag the head, as a server publishes them every N records or seconds.
        anchored = chain.Record.from_dict(records[-max(1, count // 2)])
        anchors.append(chain.sign_anchor(anchored, signer))
    return records, anchors


def export_text(signer: keys.Signer, chains: dict[str, int] | None = None) -> list[str]:
    records, anchors = build(signer, chains or {"w1": 6, "w2": 4})
    return [
        json.dumps(item, sort_keys=True, separators=(",", ":")) + "\n"
        for item in export.lines(records, anchors, signer)
    ]


def check(lines: list[str], signer: keys.Signer) -> verify.Report:
    found = export.read(lines)
    return verify.verify(
        found.records,
        found.anchors,
        [signer.verifier],
        trailer=found.trailer,
        problems=found.problems,
        lines=found.lines,
    )


def test_an_intact_export_is_complete(signer) -> None:
    report = check(export_text(signer), signer)
    assert report.ok and report.complete and report.trailer and report.total == 10
    assert {c.covered_by for c in report.chains.values()} == {"trailer"}


@pytest.mark.parametrize("cut", range(1, 12))
def test_every_tail_cut_is_detected(signer, cut: int) -> None:
    lines = export_text(signer)
    report = check(lines[:-cut], signer)
    assert not report.ok
    assert any(p.kind == "truncated" for p in report.problems), report.problems


@pytest.mark.parametrize("keep", [1, 10, 40, -2])
def test_a_cut_inside_the_last_line_is_detected(signer, keep: int) -> None:
    lines = export_text(signer)
    report = check([*lines[:-1], lines[-1][:keep]], signer)
    assert not report.ok
    assert {p.kind for p in report.problems} & {"truncated", "malformed"}


def test_a_cut_with_the_header_removed_is_named_as_uncertain(signer) -> None:
    lines = export_text(signer)
    records_only = [
        line for line in lines[1:] if '"trailer"' not in line and '"anchor"' not in line
    ]
    report = check(records_only[:-2], signer)  # chain w2 lost its last two records
    assert report.ok and not report.complete
    note = report.chains["w2"].tail_note
    assert note == "no anchor or trailer covers this chain: a cut tail cannot be ruled out"


def test_an_anchor_lagging_the_head_names_the_uncovered_records(signer) -> None:
    records, anchors = build(signer, {"w1": 6})
    report = verify.verify(records, anchors, [signer.verifier])
    assert report.ok and not report.complete
    assert report.chains["w1"].tail_note == (
        "no anchor or trailer covers the records after seq 3: a cut after seq 3 cannot be ruled out"
    )
    anchors = [chain.sign_anchor(chain.Record.from_dict(records[-1]), signer)]
    assert verify.verify(records, anchors, [signer.verifier]).complete


def test_a_forged_trailer_fails_its_signature(signer) -> None:
    lines = export_text(signer)
    trailer = json.loads(lines[-1])
    trailer["trailer"]["heads"]["w1"]["seq"] = 3
    report = check([*lines[:-1], json.dumps(trailer) + "\n"], signer)
    assert [p.kind for p in report.input_problems] == ["bad_signature"]


def test_records_after_the_trailer_are_inserted(signer) -> None:
    lines = export_text(signer)
    report = check([*lines, lines[3]], signer)
    (problem,) = report.input_problems
    assert (problem.kind, problem.line) == ("inserted", len(lines) + 1)


def test_a_chain_the_trailer_does_not_name(signer) -> None:
    lines = export_text(signer)
    other = export_text(signer, {"w3": 2})
    report = check([*lines[:-1], *other[1:3], lines[-1]], signer)
    assert report.chains["w3"].problem is not None
    assert report.chains["w3"].problem.kind == "inserted"


# -- malformed input: a finding naming the line or the seq, never an exception ---------

BAD_VALUES: list[Any] = [
    None,
    True,
    12,
    -1,
    10**40,
    1.5,
    float("nan"),
    "",
    "x",
    "\ud800",
    "é",
    [],
    {},
    {"a": [1]},
]


def mutations(lines: list[str]) -> list[tuple[str, int, list[str]]]:
    """(what, line number, the export with it) for many kinds of damage."""
    variants: list[tuple[str, int, list[str]]] = []
    record_line = 3  # a record of chain w1 (line 1 is the header)
    record = json.loads(lines[record_line - 1])
    for field in ("signature", "seq", "hash", "prev", "chain", "key_id", "approver", "time"):
        for value in BAD_VALUES:
            if value == record[field] and type(value) is type(record[field]):
                continue  # not damage: the value it has
            damaged = {**record, field: value}
            text = json.dumps(damaged, allow_nan=True) + "\n"
            variants.append((f"{field}={value!r}", record_line, replace(lines, record_line, text)))
        without = {k: v for k, v in record.items() if k != field}
        variants.append(
            (f"no {field}", record_line, replace(lines, record_line, json.dumps(without)))
        )
    anchor_line = next(i for i, line in enumerate(lines, 1) if line.startswith('{"anchor"'))
    anchor = json.loads(lines[anchor_line - 1])["anchor"]
    for field in ("seq", "hash", "signature", "key_id", "chain"):
        for value in BAD_VALUES:
            text = json.dumps({"anchor": {**anchor, field: value}})
            variants.append(
                (f"anchor {field}={value!r}", anchor_line, replace(lines, anchor_line, text))
            )
    trailer_line = len(lines)
    trailer = json.loads(lines[-1])["trailer"]
    for field in ("heads", "records", "signature", "key_id"):
        for value in BAD_VALUES:
            text = json.dumps({"trailer": {**trailer, field: value}})
            variants.append(
                (f"trailer {field}={value!r}", trailer_line, replace(lines, trailer_line, text))
            )
    for text in (
        "{",
        "not json",
        "[]",
        "null",
        "1",
        '"a string"',
        '{"anchor": 5}',
        '{"anchor": {}}',
        '{"trailer": []}',
        '{"export": {"format": "other"}}',
        "[" * 100000,
        '{"seq": NaN}',
        '{"keyId": "k", "seq": "nine"}',
        '{"chain": "w1", "seq": "four"}',
        '{"chain": 7}',
        '{"unknown": 1}',
        "\x00\x01",
    ):
        variants.append((text[:30], record_line, replace(lines, record_line, text)))
    return variants


def replace(lines: list[str], number: int, text: str) -> list[str]:
    changed = list(lines)
    changed[number - 1] = text if text.endswith("\n") else text + "\n"
    return changed


def test_malformed_input_is_a_finding_never_a_crash(signer) -> None:
    lines = export_text(signer)
    variants = mutations(lines)
    assert len(variants) > 250
    for what, number, damaged in variants:
        report = check(damaged, signer)
        assert not report.ok, what
        named = [p for p in report.problems if p.line == number or p.seq is not None]
        assert named, f"{what}: {report.problems}"
        for problem in report.problems:
            str(problem)  # every finding prints


def test_random_damage_never_crashes(signer) -> None:
    lines = export_text(signer)
    text = "".join(lines)
    rng = random.Random(8)
    for _ in range(400):
        damaged = list(text)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(damaged))
            action = rng.choice(("flip", "drop", "insert"))
            if action == "flip":
                damaged[at] = rng.choice('{}[]",:0123456789abcdef\n\\ ')
            elif action == "drop":
                del damaged[at]
            else:
                damaged.insert(at, rng.choice('{}[]",:09\n'))
        report = check("".join(damaged).splitlines(keepends=True), signer)
        if report.ok:  # a change the format tolerates (e.g. inside white space)
            assert report.total == 10


def test_the_cli_reports_malformed_exports_without_a_traceback(signer, tmp_path: Path) -> None:
    key = tmp_path / "key.pub"
    key.write_text(signer.verifier.pem())
    lines = export_text(signer)
    cases = {
        "cut.jsonl": lines[:-3],
        "signature.jsonl": replace(lines, 3, json.dumps({**json.loads(lines[2]), "signature": 5})),
        "not-json.jsonl": replace(lines, 4, "{not json"),
        "seq.jsonl": replace(lines, 3, json.dumps({**json.loads(lines[2]), "seq": "two"})),
        "anchor.jsonl": [*lines[:-1], '{"anchor": {"chain": "w1", "seq": "x"}}\n', lines[-1]],
    }
    expected = {
        "cut.jsonl": "truncated",
        "signature.jsonl": "line 3 chain w1 seq 1: malformed: the record cannot be read: "
        "record field 'signature' must be a string, not int 5",
        "not-json.jsonl": "line 4: malformed: not a JSON line",
        "seq.jsonl": "line 3 chain w1: malformed: the record cannot be read: "
        "record field 'seq' must be a safe integer, not str 'two'",
        "anchor.jsonl": f"line {len(lines)}: malformed: anchor lacks hash",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_text("".join(content))
        result = run_cli("verify", "--export", str(path), "--public-key", str(key), check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "Traceback" not in output
        assert expected[name] in output, output
        as_json = run_cli(
            "verify", "--export", str(path), "--public-key", str(key), "-o", "json", check=False
        )
        assert json.loads(as_json.stdout)["ok"] is False
