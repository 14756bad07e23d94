"""What the card stores and what it never stores, in plain words, German and English.

Shown on the kiosk page (``/kiosk/about``) and printed on the card sleeve
(docs/card-sleeve.md is this text as Markdown; a test keeps the two the same).
"""

from __future__ import annotations

import html

# (heading, paragraphs, list items) per language
TEXT: dict[str, tuple[str, list[tuple[str, list[str]]]]] = {
    "en": ("Your anonymous card", [
        ("What the card stores", [
            "A random number on the card. The store keeps only a keyed fingerprint of it, never the number.",
            "What you bought, by category (for example \"dairy\" or \"coffee\"), the day, and the amount. "
            "This is what makes your coupons fit.",
            "Your points, the coupons printed for you and whether you used them.",
            "If the store measures whether coupons help, some cards get no coupons, or coupons picked at random, "
            "for a few weeks, and the store notes which coupons it would have printed. Nobody chooses which "
            "cards: a keyed draw does.",
            "Till receipts for 120 days (for refunds), then only your points balance.",
            "Your history by day for 400 days, then only totals per category, without dates.",
        ]),
        ("What the card never stores", [
            "Your name, address, e-mail, phone number or birthday. Nobody asks for them.",
            "Which products you bought, the time of day, or which till or store you used.",
            "Your payment card. Purchases in sensitive categories count only as \"(private)\".",
        ]),
        ("Your rights, without an account", [
            "At the kiosk or on the store's page: see everything stored under your card and take it with you "
            "as a file.",
            "Erase your card: everything stored under it is deleted, for good.",
            "Lost your card? The recovery code on the stub moves your points to a new card, once. "
            "Keep the stub apart from the card.",
        ]),
    ]),
    "de": ("Ihre anonyme Karte", [
        ("Was die Karte speichert", [
            "Eine Zufallszahl auf der Karte. Der Markt speichert nur einen verschlüsselten Fingerabdruck davon, "
            "nie die Zahl selbst.",
            "Was Sie gekauft haben, nach Warengruppe (zum Beispiel \"Milchprodukte\" oder \"Kaffee\"), den Tag "
            "und den Betrag. Damit passen Ihre Coupons zu Ihnen.",
            "Ihre Punkte, die für Sie gedruckten Coupons und ob Sie sie eingelöst haben.",
            "Misst der Markt, ob Coupons helfen, bekommen manche Karten einige Wochen lang keine oder zufällig "
            "gewählte Coupons, und der Markt notiert, welche Coupons er gedruckt hätte. Niemand wählt die Karten "
            "aus: eine verschlüsselte Auslosung entscheidet.",
            "Kassenbelege 120 Tage lang (für Rückgaben), danach nur Ihren Punktestand.",
            "Ihre Einkäufe nach Tagen 400 Tage lang, danach nur Summen je Warengruppe, ohne Datum.",
        ]),
        ("Was die Karte nie speichert", [
            "Ihren Namen, Ihre Adresse, E-Mail, Telefonnummer oder Ihren Geburtstag. Niemand fragt danach.",
            "Welche Produkte Sie gekauft haben, die Uhrzeit, oder an welcher Kasse oder in welchem Markt.",
            "Ihre Bankkarte. Käufe in sensiblen Warengruppen zählen nur als \"(privat)\".",
        ]),
        ("Ihre Rechte, ohne Konto", [
            "Am Kiosk oder auf der Seite des Markts: alles sehen, was unter Ihrer Karte gespeichert ist, und es "
            "als Datei mitnehmen.",
            "Ihre Karte löschen: alles, was darunter gespeichert ist, wird endgültig gelöscht.",
            "Karte verloren? Der Wiederherstellungscode auf dem Abschnitt überträgt Ihre Punkte einmal auf eine "
            "neue Karte. Bewahren Sie den Abschnitt getrennt von der Karte auf.",
        ]),
    ]),
}


def to_html() -> str:
    """Both languages as HTML sections (each with its ``lang``)."""
    out = []
    for lang, (title, sections) in TEXT.items():
        parts = [f'<section lang="{lang}"><h2>{html.escape(title)}</h2>']
        for heading, items in sections:
            lis = "".join(f"<li>{html.escape(i)}</li>" for i in items)
            parts.append(f"<h3>{html.escape(heading)}</h3><ul>{lis}</ul>")
        parts.append("</section>")
        out.append("".join(parts))
    return "\n".join(out)


def to_markdown() -> str:
    """Both languages as Markdown, for the printed card sleeve."""
    lines = ["# anoncard: what the card stores / was die Karte speichert", ""]
    for _lang, (title, sections) in TEXT.items():
        lines += [f"## {title}", ""]
        for heading, items in sections:
            lines += [f"### {heading}", ""] + [f"- {i}" for i in items] + [""]
    return "\n".join(lines)


PROGRAMME_TEXT = to_html()
