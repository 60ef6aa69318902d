"""A restarted writer's new chain names where the old one ended; verify holds it to that."""

from __future__ import annotations

from kubewrit.webhook import chain, keys
from kubewrit.webhook.chain import Draft, Head
from kubewrit.webhook.verify import verify


def written(signer: keys.Signer, name: str, count: int, follows: Head | None = None) -> list:
    head = Head(name)
    records = [head.seal_next(chain.genesis_draft(signer.verifier.b64, "w-ns", follows), signer)]
    records += [
        head.seal_next(Draft(kind="decision", decision="PERMIT"), signer) for _ in range(count)
    ]
    return records


def test_the_genesis_message_round_trips() -> None:
    draft = chain.genesis_draft("KEY", "w-ns", Head("w-ns-1", 7, "ab" * 32))
    parsed = chain.parse_genesis(draft.message)
    assert parsed == chain.Genesis("w-ns", ("w-ns-1", 7, "ab" * 32))
    assert chain.parse_genesis("ed25519:KEY") == chain.Genesis()
    assert chain.parse_genesis("follows:x@notanumber:h").follows is None


def test_the_old_chain_must_end_where_its_successor_says() -> None:
    signer = keys.generate()
    old = written(signer, "w-ns-1", 3)
    new = written(signer, "w-ns-2", 1, Head("w-ns-1", old[-1].seq, old[-1].hash))
    report = verify([r.to_dict() for r in old + new], [], [signer.verifier])
    assert report.ok and report.chains["w-ns-1"].covered_by == "successor"
    # Records of the old chain removed after the restart: the successor's statement says so.
    cut = verify([r.to_dict() for r in old[:-1] + new], [], [signer.verifier])
    problem = cut.chains["w-ns-1"].problem
    assert problem is not None and problem.kind == "truncated" and problem.seq == 3
