"""Coupon arms: which cards get targeted coupons, random-category coupons or none.

Design overview. The programme's ``[campaign]`` cuts time into periods of whole weeks
counted from a Monday. In each period every card is in one arm, drawn by a keyed hash of
its token and the period's number (the key ring's ``coupon-arm`` sub-key), so the draw
needs no stored state, is the same at every entrance and for the insights release (which
reads tokens, never card secrets), and cannot be predicted or steered without the ring:

* ``targeted`` - the coupons the suggestion engine picks (what the entrance always did);
* ``random``   - as many coupons, of categories drawn uniformly from the suggestible ones
  by a keyed draw per card, day and category (deterministic, no ``random`` state);
* ``holdout``  - no coupon; what the engine picked is recorded as a *ghost*, so the
  holdout's purchases of those categories can be compared with the targeted arm's.

Comparing the arms' purchases (intent to treat: a card counts in the arm it was drawn
into, whether or not it was given anything) measures what the coupons change.

A key rotation gives a re-linked card a new token, so its arm is drawn afresh for the
rest of that period; the uplift release says when a rotation fell inside its period.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from .keyring import KeyRing
from .programme import Campaign

_SCALE = 2**64


def period_of(campaign: Campaign, day: date) -> int:
    """The number of the campaign period holding ``day`` (0 from ``first_day``; negative before)."""
    return (day - campaign.first_day).days // (7 * campaign.weeks)


def period_span(campaign: Campaign, period: int) -> tuple[date, date]:
    """``(first, last)`` day of campaign period number ``period``."""
    first = campaign.first_day + timedelta(weeks=campaign.weeks * period)
    return first, first + timedelta(weeks=campaign.weeks, days=-1)


def arm(ring: KeyRing, campaign: Campaign, token: bytes, period: int) -> str:
    """The arm of the card with ``token`` in campaign period ``period``.

    The keyed draw is uniform on [0, 1) (64 bits); its percentile picks the arm by the
    programme's shares, in the order targeted, random, holdout.
    """
    if not campaign.measures:
        return "targeted"
    draw = ring.arm_draw(token, b"arm\x00" + period.to_bytes(8, "big", signed=True))
    percentile = draw * 100 // _SCALE
    if percentile < campaign.targeted:
        return "targeted"
    if percentile < campaign.targeted + campaign.random:
        return "random"
    return "holdout"


def random_categories(
    ring: KeyRing, token: bytes, day: date, candidates: Iterable[str], k: int, exclude: set[str] = frozenset()
) -> list[str]:
    """``k`` categories drawn uniformly (without replacement) from ``candidates`` less
    ``exclude``: each ranked by a keyed draw of the card's token, the day and its name,
    the ``k`` lowest kept. The same card on the same day draws the same categories."""
    context = b"random\x00" + day.isoformat().encode() + b"\x00"
    pool = sorted(set(candidates) - set(exclude))
    ranked = sorted(pool, key=lambda c: (ring.arm_draw(token, context + c.encode()), c))
    return ranked[: max(k, 0)]
