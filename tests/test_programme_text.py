"""The holder's programme text: both languages, the same on the page and on the printed sleeve."""

from __future__ import annotations

from pathlib import Path

from anoncard import programme_text

SLEEVE = Path(__file__).resolve().parent.parent / "docs" / "card-sleeve.md"


def test_the_sleeve_in_the_docs_is_the_programme_text():
    assert SLEEVE.read_text(encoding="utf-8") == programme_text.to_markdown(), (
        "regenerate: python -c 'from anoncard.programme_text import to_markdown;"
        " open(\"docs/card-sleeve.md\", \"w\").write(to_markdown())'"
    )


def test_both_languages_say_what_is_stored_and_what_never_is():
    assert set(programme_text.TEXT) == {"de", "en"}
    for _lang, (_title, sections) in programme_text.TEXT.items():
        assert len(sections) == 3 and all(items for _heading, items in sections)
    page = programme_text.to_html()
    assert '<section lang="de">' in page and '<section lang="en">' in page
    assert "never stores" in page and "nie speichert" in page
