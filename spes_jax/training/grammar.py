"""A small English grammar with deterministic German translations.

Every sentence is generated together with its translation, so the ST references are exact. The
templates exercise the German phenomena that make translation non-monotonic: verb-final subordinate
clauses ("..., dass der Mann den roten Ball sieht"), separable verbs ("macht die Tür auf"), verb-first
yes/no questions, case and gender agreement of articles and adjectives, and number agreement.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# noun: (English singular, English plural, German singular, German plural, gender m/f/n)
NOUNS = [
    ("ball", "balls", "Ball", "Bälle", "m"), ("box", "boxes", "Kiste", "Kisten", "f"),
    ("cup", "cups", "Tasse", "Tassen", "f"), ("book", "books", "Buch", "Bücher", "n"),
    ("chair", "chairs", "Stuhl", "Stühle", "m"), ("table", "tables", "Tisch", "Tische", "m"),
    ("car", "cars", "Auto", "Autos", "n"), ("dog", "dogs", "Hund", "Hunde", "m"),
    ("cat", "cats", "Katze", "Katzen", "f"), ("bird", "birds", "Vogel", "Vögel", "m"),
    ("hat", "hats", "Hut", "Hüte", "m"), ("key", "keys", "Schlüssel", "Schlüssel", "m"),
    ("lamp", "lamps", "Lampe", "Lampen", "f"), ("apple", "apples", "Apfel", "Äpfel", "m"),
    ("door", "doors", "Tür", "Türen", "f"), ("window", "windows", "Fenster", "Fenster", "n"),
    ("bottle", "bottles", "Flasche", "Flaschen", "f"), ("letter", "letters", "Brief", "Briefe", "m"),
    ("flower", "flowers", "Blume", "Blumen", "f"), ("shoe", "shoes", "Schuh", "Schuhe", "m"),
    ("bag", "bags", "Tasche", "Taschen", "f"), ("house", "houses", "Haus", "Häuser", "n"),
    ("phone", "phones", "Telefon", "Telefone", "n"), ("clock", "clocks", "Uhr", "Uhren", "f"),
    ("picture", "pictures", "Bild", "Bilder", "n"), ("boat", "boats", "Boot", "Boote", "n"),
]
# adjective: (English, German stem)
ADJECTIVES = [("red", "rot"), ("blue", "blau"), ("green", "grün"), ("yellow", "gelb"), ("black", "schwarz"),
              ("white", "weiß"), ("brown", "braun"), ("big", "groß"), ("small", "klein"), ("old", "alt"),
              ("new", "neu"), ("heavy", "schwer")]
# person: (English, German nominative, German accusative, gender)
PEOPLE = [("the man", "der Mann", "den Mann", "m"), ("the woman", "die Frau", "die Frau", "f"),
          ("the child", "das Kind", "das Kind", "n"), ("the teacher", "der Lehrer", "den Lehrer", "m"),
          ("my friend", "mein Freund", "meinen Freund", "m"), ("my sister", "meine Schwester",
                                                                 "meine Schwester", "f"),
          ("the doctor", "die Ärztin", "die Ärztin", "f"), ("the boy", "der Junge", "den Jungen", "m")]
# transitive verb: (English 3sg, German 3sg, German separable prefix or "")
VERBS = [("sees", "sieht", ""), ("takes", "nimmt", ""), ("buys", "kauft", ""), ("finds", "findet", ""),
         ("needs", "braucht", ""), ("likes", "mag", ""), ("opens", "macht", "auf"), ("closes", "macht", "zu"),
         ("brings", "bringt", "mit"), ("picks up", "hebt", "auf"), ("puts down", "legt", "hin")]
# place: (English, German preposition taking dative, the noun index)
PLACES = [("on", "auf"), ("under", "unter"), ("next to", "neben"), ("behind", "hinter"), ("in", "in")]
NUMBERS = [("two", "zwei"), ("three", "drei"), ("four", "vier"), ("five", "fünf"), ("six", "sechs"),
           ("seven", "sieben"), ("eight", "acht"), ("nine", "neun"), ("ten", "zehn"), ("eleven", "elf"),
           ("twelve", "zwölf"), ("twenty", "zwanzig")]
THINKING = [("i know that", "ich weiß, dass"), ("she says that", "sie sagt, dass"),
            ("we think that", "wir denken, dass"), ("he hopes that", "er hofft, dass")]

_ARTICLES = {("nom", "m"): "der", ("nom", "f"): "die", ("nom", "n"): "das", ("acc", "m"): "den",
             ("acc", "f"): "die", ("acc", "n"): "das", ("dat", "m"): "dem", ("dat", "f"): "der",
             ("dat", "n"): "dem"}


def _np_de(noun, adj, case: str) -> str:
    """Definite noun phrase with a weakly inflected adjective: der rote Ball, den roten Ball, dem roten Ball."""
    gender = noun[4]
    ending = "e" if case == "nom" or (case == "acc" and gender != "m") else "en"
    words = [_ARTICLES[(case, gender)]] + ([adj[1] + ending] if adj else []) + [noun[2]]
    return " ".join(words)


def _np_en(noun, adj) -> str:
    return " ".join(["the"] + ([adj[0]] if adj else []) + [noun[0]])


@dataclass(frozen=True)
class Sentence:
    en: str
    de: str
    template: str


def _capitalise(s: str) -> str:
    return s[0].upper() + s[1:]


@dataclass(frozen=True)
class Lexicon:
    """The word lists the templates draw from (the larger grammar passes longer lists)."""

    nouns: list
    adjectives: list
    people: list
    verbs: list
    places: list
    numbers: list
    thinking: list


SMALL = Lexicon(NOUNS, ADJECTIVES, PEOPLE, VERBS, PLACES, NUMBERS, THINKING)
N_TEMPLATES = 7


def sentence(rng: random.Random) -> Sentence:
    """One random sentence pair. English is lower case (ASR targets); German is cased."""
    noun, noun2 = rng.choice(NOUNS), rng.choice(NOUNS)
    adj = rng.choice(ADJECTIVES) if rng.random() < 0.7 else None
    person, verb = rng.choice(PEOPLE), rng.choice(VERBS)
    return template(rng.randrange(N_TEMPLATES), rng, SMALL, noun, noun2, adj, person, verb)


def template(kind: int, rng: random.Random, lex: Lexicon, noun, noun2, adj, person, verb) -> Sentence:
    """Sentence of template ``kind`` (0-6) from drawn words; further choices come from lex and rng."""
    if kind == 0:  # location statement
        prep = rng.choice(lex.places)
        en = f"{_np_en(noun, adj)} is {prep[0]} the {noun2[0]}."
        de = f"{_capitalise(_np_de(noun, adj, 'nom'))} ist {prep[1]} {_np_de(noun2, None, 'dat')}."
        return Sentence(en, de, "location")
    if kind == 1:  # counting, strong plural adjective
        num = rng.choice(lex.numbers)
        en = f"i see {num[0]} {adj[0] + ' ' if adj else ''}{noun[1]}."
        de = f"Ich sehe {num[1]} {adj[1] + 'e ' if adj else ''}{noun[3]}."
        return Sentence(en, de, "count")
    if kind == 2:  # main clause, maybe a separable verb
        en = f"{person[0]} {verb[0]} {_np_en(noun, adj)}."
        tail = f" {verb[2]}" if verb[2] else ""
        de = f"{_capitalise(person[1])} {verb[1]} {_np_de(noun, adj, 'acc')}{tail}."
        return Sentence(en, de, "transitive")
    if kind == 3:  # subordinate clause: verb-final (separable prefix joins the verb)
        intro = rng.choice(lex.thinking)
        en = f"{intro[0]} {person[0]} {verb[0]} {_np_en(noun, adj)}."
        de = f"{_capitalise(intro[1])} {person[1]} {_np_de(noun, adj, 'acc')} {verb[2]}{verb[1]}."
        return Sentence(en, de, "subordinate")
    if kind == 4:  # where-question
        en = f"where is {_np_en(noun, adj)}?"
        de = f"Wo ist {_np_de(noun, adj, 'nom')}?"
        return Sentence(en, de, "where")
    if kind == 5:  # yes/no question: verb-first in German
        en = f"does {person[0]} see {_np_en(noun, adj)}?"
        de = f"Sieht {person[1]} {_np_de(noun, adj, 'acc')}?"
        return Sentence(en, de, "yesno")
    en = f"what colour is the {noun[0]}?"
    de = f"Welche Farbe hat {_np_de(noun, None, 'nom')}?"
    return Sentence(en, de, "colour")


def sentences(n: int, seed: int, exclude: set[str] = frozenset(), generate=sentence) -> list[Sentence]:
    """n distinct sentence pairs, deterministic in seed, none of whose English side is in exclude;
    ``generate(rng)`` draws one (this grammar's ``sentence`` or the larger grammar's)."""
    rng = random.Random(seed)
    out, seen = [], set(exclude)
    while len(out) < n:
        s = generate(rng)
        if s.en not in seen:
            seen.add(s.en)
            out.append(s)
    return out


def vocabulary() -> list[str]:
    """Every English word the grammar can produce (what the synthesiser must speak)."""
    words: set[str] = set()
    for group in (NOUNS, ADJECTIVES, PEOPLE, VERBS, PLACES, NUMBERS, THINKING):
        for item in group:
            for part in (item[:2] if group is NOUNS else item[:1]):
                words.update(part.split())
    words.update("the is i see where does what colour".split())
    return sorted(words)
