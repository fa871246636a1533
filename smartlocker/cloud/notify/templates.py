"""What recipients and couriers are told, per locale (``$name`` placeholders)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from string import Template
from typing import Any

__all__ = ["DEFAULT_LOCALE", "LOCALES", "NotificationKind", "Rendered", "render"]

DEFAULT_LOCALE = "en"


class NotificationKind(StrEnum):
    CODE_ISSUED = "code_issued"  # deposited: here is your pickup code
    REMINDER = "reminder"  # the deadline is near
    EXPIRED = "expired"  # not picked up in time
    PICKED_UP = "picked_up"
    RETURNED = "returned"  # returned to the sender
    COURIER_COLLECT = "courier_collect"  # a courier must collect an expired parcel


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str


_T = dict[NotificationKind, tuple[str, str]]

_EN: _T = {
    NotificationKind.CODE_ISSUED: (
        "Your parcel $reference is ready for pickup",
        "Your parcel $reference is waiting in locker $cabinet, compartment $compartment.\n"
        "Pickup code: $code\n"
        "Type it on the locker's keypad or show the QR code to its scanner.\n"
        "Please collect it before $deadline.",
    ),
    NotificationKind.REMINDER: (
        "Reminder: parcel $reference is waiting",
        "Your parcel $reference is still in locker $cabinet. Please collect it before $deadline.",
    ),
    NotificationKind.EXPIRED: (
        "Parcel $reference was not collected",
        "Your parcel $reference was not collected by $deadline and will be returned.",
    ),
    NotificationKind.PICKED_UP: (
        "Parcel $reference picked up",
        "Your parcel $reference was picked up from locker $cabinet. Thank you.",
    ),
    NotificationKind.RETURNED: (
        "Parcel $reference returned",
        "Parcel $reference was returned to the sender.",
    ),
    NotificationKind.COURIER_COLLECT: (
        "Collect expired parcel $reference",
        "Parcel $reference in locker $cabinet, compartment $compartment, has expired."
        " Please collect it for return.",
    ),
}

_DE: _T = {
    NotificationKind.CODE_ISSUED: (
        "Ihr Paket $reference liegt zur Abholung bereit",
        "Ihr Paket $reference liegt in Station $cabinet, Fach $compartment.\n"
        "Abholcode: $code\n"
        "Geben Sie ihn an der Tastatur ein oder halten Sie den QR-Code an den Scanner.\n"
        "Bitte holen Sie es bis $deadline ab.",
    ),
    NotificationKind.REMINDER: (
        "Erinnerung: Paket $reference wartet",
        "Ihr Paket $reference liegt noch in Station $cabinet. Bitte bis $deadline abholen.",
    ),
    NotificationKind.EXPIRED: (
        "Paket $reference wurde nicht abgeholt",
        "Ihr Paket $reference wurde bis $deadline nicht abgeholt und geht zurück.",
    ),
    NotificationKind.PICKED_UP: (
        "Paket $reference abgeholt",
        "Ihr Paket $reference wurde aus Station $cabinet abgeholt. Vielen Dank.",
    ),
    NotificationKind.RETURNED: (
        "Paket $reference zurückgesandt",
        "Paket $reference wurde an den Absender zurückgesandt.",
    ),
    NotificationKind.COURIER_COLLECT: (
        "Abgelaufenes Paket $reference abholen",
        "Paket $reference in Station $cabinet, Fach $compartment, ist abgelaufen."
        " Bitte zur Rücksendung abholen.",
    ),
}

_FR: _T = {
    NotificationKind.CODE_ISSUED: (
        "Votre colis $reference est prêt",
        "Votre colis $reference vous attend dans la consigne $cabinet, casier $compartment.\n"
        "Code de retrait : $code\n"
        "Saisissez-le sur le clavier ou présentez le QR code au lecteur.\n"
        "Merci de le retirer avant le $deadline.",
    ),
    NotificationKind.REMINDER: (
        "Rappel : le colis $reference vous attend",
        "Votre colis $reference est toujours dans la consigne $cabinet."
        " Merci de le retirer avant le $deadline.",
    ),
    NotificationKind.EXPIRED: (
        "Colis $reference non retiré",
        "Votre colis $reference n'a pas été retiré avant le $deadline et sera retourné.",
    ),
    NotificationKind.PICKED_UP: (
        "Colis $reference retiré",
        "Votre colis $reference a été retiré de la consigne $cabinet. Merci.",
    ),
    NotificationKind.RETURNED: (
        "Colis $reference retourné",
        "Le colis $reference a été retourné à l'expéditeur.",
    ),
    NotificationKind.COURIER_COLLECT: (
        "Colis expiré $reference à collecter",
        "Le colis $reference (consigne $cabinet, casier $compartment) a expiré."
        " Merci de le collecter pour retour.",
    ),
}

LOCALES: dict[str, _T] = {"en": _EN, "de": _DE, "fr": _FR}


def render(kind: NotificationKind, locale: str, values: dict[str, Any]) -> Rendered:
    """Fill the template of ``kind`` in ``locale`` (English when unknown).

    Raises ``KeyError`` naming a placeholder with no value: a message with a
    hole in it is never sent.
    """
    subject, text = LOCALES.get(locale, LOCALES[DEFAULT_LOCALE])[kind]
    fields = {k: str(v) for k, v in values.items()}
    return Rendered(Template(subject).substitute(fields), Template(text).substitute(fields))
