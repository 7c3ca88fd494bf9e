"""Seeded text perturbations for robustness runs (``--perturb``).

A spec is ``strip-diacritics``, ``lowercase`` or ``typos:RATE`` (RATE = chance that each
letter gets one edit). :func:`parse_perturbation` turns a spec into ``text → text``.
Typos are seeded per text (seed + the text itself), so a sentence gets the same typos
whatever order or batch it is processed in.
"""

from __future__ import annotations

import random
import unicodedata
from typing import Callable

from optical.errors import OpticalError

# Letters whose stroke is not a combining mark, so NFD leaves them whole (Vietnamese đ).
_STROKED = str.maketrans({"đ": "d", "Đ": "D", "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ħ": "h", "Ħ": "H"})

_KEYBOARD_NEIGHBOURS = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij", "i": "uok",
    "o": "ipl", "p": "ol", "a": "qsz", "s": "adw", "d": "sfe", "f": "dgr", "g": "fht", "h": "gjy",
    "j": "hku", "k": "jli", "l": "ko", "z": "xa", "x": "zcs", "c": "xvd", "v": "cbf", "b": "vng",
    "n": "bmh", "m": "nj",
}


def strip_diacritics(text: str) -> str:
    """Remove accents and tone marks: "Con mèo ngủ, đi" → "Con meo ngu, di"."""
    decomposed = unicodedata.normalize("NFD", text.translate(_STROKED))
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def lowercase(text: str) -> str:
    return text.lower()


def typos(text: str, rate: float, seed: int = 0) -> str:
    """Each letter, with probability ``rate``, is deleted, doubled, swapped with the next
    character or replaced by a keyboard neighbour (the four typing slips, equally likely)."""
    rng = random.Random(f"{seed}\x00{text}")
    chars = list(text)
    out: list[str] = []
    i = 0
    while i < len(chars):
        char = chars[i]
        if not char.isalpha() or rng.random() >= rate:
            out.append(char)
            i += 1
            continue
        edit = rng.randrange(4)
        if edit == 0:  # deletion
            pass
        elif edit == 1:  # doubled key
            out.extend([char, char])
        elif edit == 2 and i + 1 < len(chars):  # transposition
            out.extend([chars[i + 1], char])
            i += 1
        else:  # neighbouring key (or any letter when no neighbour is known)
            neighbours = _KEYBOARD_NEIGHBOURS.get(char.lower(), "etaoinsr")
            new = rng.choice(neighbours)
            out.append(new.upper() if char.isupper() else new)
        i += 1
    return "".join(out)


def parse_perturbation(spec: str, seed: int = 0) -> Callable[[str], str]:
    """``"typos:0.05"`` → a function text → perturbed text; bad specs raise OpticalError."""
    name, _, arg = spec.strip().partition(":")
    if name == "strip-diacritics" and not arg:
        return strip_diacritics
    if name == "lowercase" and not arg:
        return lowercase
    if name == "typos":
        try:
            rate = float(arg)
        except ValueError:
            raise OpticalError(f"--perturb {spec}: typos needs a rate, e.g. typos:0.05") from None
        if not 0.0 <= rate <= 1.0:
            raise OpticalError(f"--perturb {spec}: rate must be between 0 and 1")
        return lambda text: typos(text, rate, seed)
    raise OpticalError(f"--perturb {spec}: unknown perturbation; use strip-diacritics, "
                       f"lowercase or typos:RATE")
