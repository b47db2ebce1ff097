"""``python -m tests.corpus``: rewrite tests/corpus/phase-events.json."""

from tests.corpus import PATH, corpus_json

PATH.write_bytes(corpus_json())
print(f"wrote {PATH}")
