import json

import pytest

from core.documents import DocumentFormatError, passage_from_dict
from teacher.external import ExternalEdits
from teacher.grounding import guard
from teacher.parse import clean_line, parse_self_edit, training_sequences
from teacher.prompts import formats, self_edit_prompt
from teacher.self_edit import build_self_edit
from core.settings.teacher import GroundingSettings

PASSAGE = passage_from_dict({
    "title": "Fresno",
    "context": ("In the 1970s, the city was the subject of a song, \"Walking Into Fresno\", written by guitarist "
                "Bill Aken and recorded by Bob Gallion. Aken grew up in the neighboring town of Madera. "
                "The city has 500,000 residents and a large park."),
    "questions": [{"question": "Who wrote the song?", "answer": "Bill Aken"}],
})


def test_every_format_has_a_prompt_with_the_passage():
    assert set(formats()) == {"implications", "implications-long", "rewrite", "self-qa"}
    for f in formats():
        text = self_edit_prompt(PASSAGE, f)
        assert PASSAGE.context in text and PASSAGE.title in text
    with pytest.raises(ValueError):
        self_edit_prompt(PASSAGE, "poem")


def test_clean_line_strips_markdown_bullets_and_labels():
    assert clean_line("  1. **Bill Aken** wrote the song.") == "Bill Aken wrote the song."
    assert clean_line("- `Madera` is a town") == "Madera is a town"
    assert clean_line("True 3: Aken grew up in Madera.") == "Aken grew up in Madera."
    assert clean_line("### Heading") == "Heading"


def test_parse_lines_drops_junk_and_duplicates_and_splits_sentences():
    raw = ("Sure! Here are statements:\n\n1. Bill Aken wrote the song. Bob Gallion recorded it.\n"
           "2. Bill Aken wrote the song.\n---\n3) ???\nImplications:\n")
    units = parse_self_edit(raw, "implications")
    assert units == ["Sure!", "Bill Aken wrote the song.", "Bob Gallion recorded it."]  # "Sure!" is left to the guard
    assert "???" not in units and not any(u.endswith(":") for u in units)


def test_parse_qa_blocks():
    raw = "Q: Who wrote the song?\nA: Bill Aken\n\nQuestion 2: Where did Aken grow up?\nAnswer: Madera\nQ: dangling?"
    assert parse_self_edit(raw, "self-qa") == [
        "Question: Who wrote the song?\nAnswer: Bill Aken",
        "Question: Where did Aken grow up?\nAnswer: Madera",
    ]


def test_parse_rewrites_by_blank_lines():
    raw = "Version 1:\nBill Aken wrote a song about Fresno.\nIt was recorded.\n\nThe song about Fresno is by Aken."
    units = parse_self_edit(raw, "rewrite")
    assert units == ["Bill Aken wrote a song about Fresno. It was recorded.", "The song about Fresno is by Aken."]


def test_training_sequences_title_prefixed_passage_last():
    seqs = training_sequences("T", ["a b c", "d e f"], "the passage")
    assert seqs == ["T\na b c", "T\nd e f", "T\nthe passage"]
    assert training_sequences("T", ["x"], None) == ["T\nx"]


def test_guard_drops_invented_numbers_names_and_unsupported_lines():
    s = GroundingSettings()
    units = [
        "Bill Aken wrote the song Walking Into Fresno.",  # grounded
        "Bill Aken wrote the song in 1985.",  # invented year
        "Aken was born in Chicago near Madera.",  # invented place
        "The guitarist loved cooking spaghetti with tomatoes every weekend.",  # unsupported content
        "The city has 500,000 residents.",  # grounded number with comma
        "Hi there.",  # too short
    ]
    kept, dropped = guard(units, PASSAGE.title, PASSAGE.context, s)
    assert kept == ["Bill Aken wrote the song Walking Into Fresno.", "The city has 500,000 residents."]
    reasons = {v.unit: v.reason for v in dropped}
    assert "number not in passage: 1985" in reasons["Bill Aken wrote the song in 1985."]
    assert "Chicago" in reasons["Aken was born in Chicago near Madera."]
    assert reasons["Hi there."].startswith("too short")
    assert reasons["The guitarist loved cooking spaghetti with tomatoes every weekend."].startswith("support")


def test_guard_window_catches_recombined_facts():
    p = passage_from_dict({"title": "T", "context": (
        "Anna Berg painted the northern harbour. The weather was cold that winter. Many boats were idle. "
        "Years later Carl Olsen repaired the old lighthouse.")})
    line = "Carl Olsen painted the northern harbour lighthouse."
    strict = GroundingSettings(window_sentences=1, min_support=0.8)
    loose = GroundingSettings(window_sentences=0, min_support=0.8)
    assert guard([line], p.title, p.context, strict)[0] == []
    assert guard([line], p.title, p.context, loose)[0] == [line]


def test_guard_disabled_keeps_everything():
    kept, dropped = guard(["made up 1999 Zork"], PASSAGE.title, PASSAGE.context, GroundingSettings(enabled=False))
    assert kept == ["made up 1999 Zork"] and dropped == []


def test_build_self_edit_pools_samples_and_records_drops():
    se = build_self_edit(PASSAGE, ["Bill Aken wrote the song Walking Into Fresno.\nAken lived in Paris in 1990.",
                                   "1. Bill Aken wrote the song Walking Into Fresno."], "implications",
                         GroundingSettings())
    assert se.parsed == 2 and se.units == ["Bill Aken wrote the song Walking Into Fresno."]
    assert len(se.dropped) == 1 and "1990" in se.dropped[0].reason
    assert se.sequences(PASSAGE)[-1] == f"{PASSAGE.title}\n{PASSAGE.context}"
    assert json.dumps(se.to_json())


def test_external_edits_file(tmp_path):
    good = [{"title": PASSAGE.title, "context": PASSAGE.context, "questions": [],
             "completions": ["Bill Aken wrote the song Walking Into Fresno.\nBob Gallion recorded the song."]}]
    f = tmp_path / "e.json"
    f.write_text(json.dumps(good))
    ext = ExternalEdits(f)
    se = ext.self_edit(PASSAGE, "implications", GroundingSettings())
    assert se.source == "external:e.json" and len(se.units) == 2
    other = passage_from_dict({"title": "X", "context": "unrelated"})
    with pytest.raises(KeyError, match="no completions"):
        ext.self_edit(other, "implications", GroundingSettings())


@pytest.mark.parametrize("content,needle", [
    ("{}", "non-empty JSON list"),
    ('[{"title": "t", "context": "c"}]', "completions"),
    ('[{"title": "t", "context": "c", "completions": [1, 2]}]', "completions"),
    ('[{"title": "t", "completions": ["x"]}]', "context"),
    ("[{", "not valid JSON"),
])
def test_external_edits_malformed(tmp_path, content, needle):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(DocumentFormatError, match=needle):
        ExternalEdits(f)


def test_probe_candidates_must_be_short_spans_of_the_passage():
    from teacher.probes import candidate_probes

    raw = ["Q: Who wrote the song?\nA: Bill Aken\nQ: Who sang it?\nA: Elvis Presley\n"
           "Q: Where did Aken grow up?\nA: in the neighboring town of Madera, a place with many farms and fields\n"
           "Q: Did Bill Aken write it?\nA: Bill Aken", "Q: Who wrote the song?\nA: Bill Aken"]
    res = candidate_probes(PASSAGE, raw)
    assert [(q.question, q.answer) for q in res.kept] == [("Who wrote the song?", "Bill Aken")]
    reasons = sorted(r for _, r in res.dropped)
    assert reasons == ["answer missing or too long", "answer not in passage", "question gives the answer away"]


def test_teacher_probes_are_grounded_and_checked_in_context(runtime):
    from teacher.probes import write_probes
    from core.settings.teacher import TeacherSettings

    # The tiny model writes noise: whatever survives must satisfy the guarantees, and drops carry reasons.
    res = write_probes(runtime.student.model, runtime.student.tokenizer, PASSAGE,
                       TeacherSettings(samples=2, max_new_tokens=48, temperature=1.0), seed=0)
    for qa in res.kept:
        assert qa.answer.lower() in PASSAGE.context.lower()
    assert all(reason for _, reason in res.dropped)


def test_diversity_shows_a_collapsing_teacher():
    from teacher.diversity import compression_ratio, distinct_ngrams, edit_diversity

    varied = ["The river Zorblax flows north.", "Anna Berg painted a harbour in 1881.", "Lactase splits lactose."]
    same = ["The river flows north."] * 3
    assert distinct_ngrams(varied, 2) == 1.0 and distinct_ngrams(same, 2) < 0.4
    assert compression_ratio(same * 5) < compression_ratio(varied)
    rows = [{"units": ["a b c", "d e"], "dropped": 1, "parsed": 3}, {"units": [], "dropped": 2, "parsed": 2}]
    d = edit_diversity(rows)
    assert d["mean_units"] == 1.0 and d["guard_dropped_share"] == 0.6 and d["mean_kept_words"] == 5
