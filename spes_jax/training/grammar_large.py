"""The larger grammar (>= 400 English words, 22 templates) for the robust embedded models.

It contains the small grammar (``grammar.py``: its words and its seven templates, which are drawn
here from the longer word lists) and adds templates whose German side needs what a contrastive
explanation should be able to find: the gender of the English noun decides the article (der/die/das,
ein/eine/ein, dem/der/dem) and the adjective ending, both with the definite (weak: der rote Ball,
den roten Ball) and the indefinite article (mixed: ein roter Ball, eine rote Lampe, ein rotes Buch),
plus more reordering (perfect and modal verb-final infinitives, V2 inversion after a fronted adverb
or place, verb-final ``weil`` clauses, ``nicht`` before the separable prefix).
"""

from __future__ import annotations

import random

from .grammar import (ADJECTIVES, NOUNS, NUMBERS, PEOPLE, PLACES, THINKING, VERBS, Lexicon, Sentence,
                      _capitalise, _np_en, sentences as _sentences, template as _small_template)

# noun: (English singular, English plural, German singular, German plural, gender); no weak nouns
# (their accusative would change the noun itself), no plural datives.
NOUNS_L = NOUNS + [
    ("pen", "pens", "Stift", "Stifte", "m"), ("pencil", "pencils", "Bleistift", "Bleistifte", "m"),
    ("spoon", "spoons", "Löffel", "Löffel", "m"), ("fork", "forks", "Gabel", "Gabeln", "f"),
    ("knife", "knives", "Messer", "Messer", "n"), ("plate", "plates", "Teller", "Teller", "m"),
    ("glass", "glasses", "Glas", "Gläser", "n"), ("bowl", "bowls", "Schüssel", "Schüsseln", "f"),
    ("bed", "beds", "Bett", "Betten", "n"), ("sofa", "sofas", "Sofa", "Sofas", "n"),
    ("shirt", "shirts", "Hemd", "Hemden", "n"), ("jacket", "jackets", "Jacke", "Jacken", "f"),
    ("coat", "coats", "Mantel", "Mäntel", "m"), ("dress", "dresses", "Kleid", "Kleider", "n"),
    ("sock", "socks", "Socke", "Socken", "f"), ("glove", "gloves", "Handschuh", "Handschuhe", "m"),
    ("umbrella", "umbrellas", "Schirm", "Schirme", "m"), ("ring", "rings", "Ring", "Ringe", "m"),
    ("bicycle", "bicycles", "Fahrrad", "Fahrräder", "n"), ("bus", "buses", "Bus", "Busse", "m"),
    ("train", "trains", "Zug", "Züge", "m"), ("horse", "horses", "Pferd", "Pferde", "n"),
    ("cow", "cows", "Kuh", "Kühe", "f"), ("pig", "pigs", "Schwein", "Schweine", "n"),
    ("mouse", "mice", "Maus", "Mäuse", "f"), ("fish", "fish", "Fisch", "Fische", "m"),
    ("duck", "ducks", "Ente", "Enten", "f"), ("rabbit", "rabbits", "Kaninchen", "Kaninchen", "n"),
    ("egg", "eggs", "Ei", "Eier", "n"), ("banana", "bananas", "Banane", "Bananen", "f"),
    ("cake", "cakes", "Kuchen", "Kuchen", "m"), ("tomato", "tomatoes", "Tomate", "Tomaten", "f"),
    ("potato", "potatoes", "Kartoffel", "Kartoffeln", "f"), ("carrot", "carrots", "Karotte", "Karotten", "f"),
    ("lemon", "lemons", "Zitrone", "Zitronen", "f"), ("pear", "pears", "Birne", "Birnen", "f"),
    ("tree", "trees", "Baum", "Bäume", "m"), ("stone", "stones", "Stein", "Steine", "m"),
    ("leaf", "leaves", "Blatt", "Blätter", "n"), ("candle", "candles", "Kerze", "Kerzen", "f"),
    ("mirror", "mirrors", "Spiegel", "Spiegel", "m"), ("pillow", "pillows", "Kissen", "Kissen", "n"),
    ("blanket", "blankets", "Decke", "Decken", "f"), ("towel", "towels", "Handtuch", "Handtücher", "n"),
    ("basket", "baskets", "Korb", "Körbe", "m"), ("bucket", "buckets", "Eimer", "Eimer", "m"),
    ("ladder", "ladders", "Leiter", "Leitern", "f"), ("hammer", "hammers", "Hammer", "Hämmer", "m"),
    ("map", "maps", "Karte", "Karten", "f"), ("ticket", "tickets", "Fahrkarte", "Fahrkarten", "f"),
    ("newspaper", "newspapers", "Zeitung", "Zeitungen", "f"), ("camera", "cameras", "Kamera", "Kameras", "f"),
    ("computer", "computers", "Computer", "Computer", "m"), ("radio", "radios", "Radio", "Radios", "n"),
    ("guitar", "guitars", "Gitarre", "Gitarren", "f"), ("piano", "pianos", "Klavier", "Klaviere", "n"),
    ("drum", "drums", "Trommel", "Trommeln", "f"), ("toy", "toys", "Spielzeug", "Spielzeuge", "n"),
    ("doll", "dolls", "Puppe", "Puppen", "f"), ("kite", "kites", "Drachen", "Drachen", "m"),
    ("wallet", "wallets", "Geldbörse", "Geldbörsen", "f"), ("coin", "coins", "Münze", "Münzen", "f"),
    ("envelope", "envelopes", "Umschlag", "Umschläge", "m"), ("notebook", "notebooks", "Heft", "Hefte", "n"),
    ("desk", "desks", "Schreibtisch", "Schreibtische", "m"), ("shelf", "shelves", "Regal", "Regale", "n"),
    ("drawer", "drawers", "Schublade", "Schubladen", "f"), ("fridge", "fridges", "Kühlschrank", "Kühlschränke", "m"),
    ("oven", "ovens", "Ofen", "Öfen", "m"), ("pot", "pots", "Topf", "Töpfe", "m"),
    ("pan", "pans", "Pfanne", "Pfannen", "f"), ("carpet", "carpets", "Teppich", "Teppiche", "m"),
    ("rope", "ropes", "Seil", "Seile", "n"), ("tent", "tents", "Zelt", "Zelte", "n"),
    ("boot", "boots", "Stiefel", "Stiefel", "m"), ("scarf", "scarves", "Schal", "Schals", "m"),
    ("helmet", "helmets", "Helm", "Helme", "m"), ("suitcase", "suitcases", "Koffer", "Koffer", "m"),
    ("bell", "bells", "Glocke", "Glocken", "f"), ("brush", "brushes", "Bürste", "Bürsten", "f"),
    ("comb", "combs", "Kamm", "Kämme", "m"), ("teapot", "teapots", "Teekanne", "Teekannen", "f"),
    ("vase", "vases", "Vase", "Vasen", "f"), ("plant", "plants", "Pflanze", "Pflanzen", "f"),
    ("ship", "ships", "Schiff", "Schiffe", "n"), ("plane", "planes", "Flugzeug", "Flugzeuge", "n"),
    ("truck", "trucks", "Lastwagen", "Lastwagen", "m"), ("frog", "frogs", "Frosch", "Frösche", "m"),
    ("spider", "spiders", "Spinne", "Spinnen", "f"), ("snake", "snakes", "Schlange", "Schlangen", "f"),
    ("goat", "goats", "Ziege", "Ziegen", "f"), ("chicken", "chickens", "Huhn", "Hühner", "n"),
    ("shell", "shells", "Muschel", "Muscheln", "f"), ("feather", "feathers", "Feder", "Federn", "f"),
    ("button", "buttons", "Knopf", "Knöpfe", "m"),
]
# adjective: (English, German attributive stem[, German predicative form when it differs])
ADJECTIVES_L = ADJECTIVES + [
    ("long", "lang"), ("short", "kurz"), ("cheap", "billig"), ("expensive", "teur", "teuer"),
    ("dark", "dunkl", "dunkel"), ("bright", "hell"), ("clean", "sauber"), ("dirty", "schmutzig"),
    ("warm", "warm"), ("cold", "kalt"), ("hot", "heiß"), ("soft", "weich"), ("hard", "hart"),
    ("full", "voll"), ("empty", "leer"), ("round", "rund"), ("pretty", "hübsch"), ("ugly", "hässlich"),
    ("wet", "nass"), ("dry", "trocken"), ("light", "leicht"), ("grey", "grau"), ("beautiful", "schön"),
    ("tiny", "winzig"), ("huge", "riesig"), ("broken", "kaputt"), ("strong", "stark"), ("thin", "dünn"),
    ("thick", "dick"), ("sharp", "scharf"), ("golden", "golden"), ("wooden", "hölzern"), ("slow", "langsam"),
    ("funny", "lustig"), ("tall", "hoh", "hoch"), ("quiet", "leis", "leise"),
]
# person: (English, German nominative, accusative, gender, dative)
_DATIVE = {"der Mann": "dem Mann", "die Frau": "der Frau", "das Kind": "dem Kind", "der Lehrer": "dem Lehrer",
           "mein Freund": "meinem Freund", "meine Schwester": "meiner Schwester", "die Ärztin": "der Ärztin",
           "der Junge": "dem Jungen"}
PEOPLE_L = [p + (_DATIVE[p[1]],) for p in PEOPLE] + [
    ("the girl", "das Mädchen", "das Mädchen", "n", "dem Mädchen"),
    ("my brother", "mein Bruder", "meinen Bruder", "m", "meinem Bruder"),
    ("my mother", "meine Mutter", "meine Mutter", "f", "meiner Mutter"),
    ("my father", "mein Vater", "meinen Vater", "m", "meinem Vater"),
    ("my aunt", "meine Tante", "meine Tante", "f", "meiner Tante"),
    ("my uncle", "mein Onkel", "meinen Onkel", "m", "meinem Onkel"),
    ("the baker", "der Bäcker", "den Bäcker", "m", "dem Bäcker"),
    ("the farmer", "der Bauer", "den Bauern", "m", "dem Bauern"),
    ("the nurse", "die Krankenschwester", "die Krankenschwester", "f", "der Krankenschwester"),
    ("the student", "der Student", "den Studenten", "m", "dem Studenten"),
    ("the cook", "der Koch", "den Koch", "m", "dem Koch"),
    ("the driver", "der Fahrer", "den Fahrer", "m", "dem Fahrer"),
    ("the king", "der König", "den König", "m", "dem König"),
    ("the queen", "die Königin", "die Königin", "f", "der Königin"),
    ("the neighbour", "der Nachbar", "den Nachbarn", "m", "dem Nachbarn"),
    ("the pilot", "der Pilot", "den Piloten", "m", "dem Piloten"),
    ("the waiter", "der Kellner", "den Kellner", "m", "dem Kellner"),
    ("the painter", "der Maler", "den Maler", "m", "dem Maler"),
    ("the singer", "die Sängerin", "die Sängerin", "f", "der Sängerin"),
]
# transitive verb: (English 3sg, German 3sg, German separable prefix, English base, English participle,
# German infinitive, German participle); every one takes "haben" and an accusative object.
_FORMS = {
    "sees": ("see", "seen", "sehen", "gesehen"), "takes": ("take", "taken", "nehmen", "genommen"),
    "buys": ("buy", "bought", "kaufen", "gekauft"), "finds": ("find", "found", "finden", "gefunden"),
    "needs": ("need", "needed", "brauchen", "gebraucht"), "likes": ("like", "liked", "mögen", "gemocht"),
    "opens": ("open", "opened", "aufmachen", "aufgemacht"), "closes": ("close", "closed", "zumachen", "zugemacht"),
    "brings": ("bring", "brought", "mitbringen", "mitgebracht"),
    "picks up": ("pick up", "picked up", "aufheben", "aufgehoben"),
    "puts down": ("put down", "put down", "hinlegen", "hingelegt"),
}
VERBS_L = [v + _FORMS[v[0]] for v in VERBS] + [
    ("sells", "verkauft", "", "sell", "sold", "verkaufen", "verkauft"),
    ("washes", "wäscht", "", "wash", "washed", "waschen", "gewaschen"),
    ("paints", "streicht", "", "paint", "painted", "streichen", "gestrichen"),
    ("carries", "trägt", "", "carry", "carried", "tragen", "getragen"),
    ("holds", "hält", "", "hold", "held", "halten", "gehalten"),
    ("breaks", "macht", "kaputt", "break", "broken", "kaputtmachen", "kaputtgemacht"),
    ("cleans", "putzt", "", "clean", "cleaned", "putzen", "geputzt"),
    ("fixes", "repariert", "", "fix", "fixed", "reparieren", "repariert"),
    ("loses", "verliert", "", "lose", "lost", "verlieren", "verloren"),
    ("hides", "versteckt", "", "hide", "hidden", "verstecken", "versteckt"),
    ("throws", "wirft", "", "throw", "thrown", "werfen", "geworfen"),
    ("draws", "zeichnet", "", "draw", "drawn", "zeichnen", "gezeichnet"),
    ("turns on", "macht", "an", "turn on", "turned on", "anmachen", "angemacht"),
    ("turns off", "macht", "aus", "turn off", "turned off", "ausmachen", "ausgemacht"),
    ("looks for", "sucht", "", "look for", "looked for", "suchen", "gesucht"),
    ("keeps", "behält", "", "keep", "kept", "behalten", "behalten"),
    ("counts", "zählt", "", "count", "counted", "zählen", "gezählt"),
    ("touches", "berührt", "", "touch", "touched", "berühren", "berührt"),
    ("orders", "bestellt", "", "order", "ordered", "bestellen", "bestellt"),
    ("cuts", "schneidet", "", "cut", "cut", "schneiden", "geschnitten"),
    ("fills", "füllt", "", "fill", "filled", "füllen", "gefüllt"),
    ("packs", "packt", "", "pack", "packed", "packen", "gepackt"),
    ("pushes", "schiebt", "", "push", "pushed", "schieben", "geschoben"),
    ("pulls", "zieht", "", "pull", "pulled", "ziehen", "gezogen"),
    ("checks", "prüft", "", "check", "checked", "prüfen", "geprüft"),
    ("describes", "beschreibt", "", "describe", "described", "beschreiben", "beschrieben"),
    ("forgets", "vergisst", "", "forget", "forgotten", "vergessen", "vergessen"),
    ("gives back", "gibt", "zurück", "give back", "given back", "zurückgeben", "zurückgegeben"),
    ("throws away", "wirft", "weg", "throw away", "thrown away", "wegwerfen", "weggeworfen"),
    ("borrows", "leiht", "aus", "borrow", "borrowed", "ausleihen", "ausgeliehen"),
]
PLACES_L = PLACES + [("in front of", "vor"), ("above", "über")]
NUMBERS_L = NUMBERS + [
    ("thirteen", "dreizehn"), ("fourteen", "vierzehn"), ("fifteen", "fünfzehn"), ("sixteen", "sechzehn"),
    ("seventeen", "siebzehn"), ("eighteen", "achtzehn"), ("nineteen", "neunzehn"), ("thirty", "dreißig"),
    ("forty", "vierzig"), ("fifty", "fünfzig"), ("a hundred", "hundert"),
]
THINKING_L = THINKING + [("they believe that", "sie glauben, dass"), ("i hope that", "ich hoffe, dass"),
                         ("he says that", "er sagt, dass"), ("she thinks that", "sie denkt, dass"),
                         ("we know that", "wir wissen, dass"), ("you know that", "du weißt, dass")]
MODALS = [("can", "kann"), ("must", "muss"), ("should", "soll"), ("wants to", "will")]
ADVERBS = [("today", "heute"), ("tomorrow", "morgen"), ("now", "jetzt"), ("often", "oft"),
           ("sometimes", "manchmal"), ("every day", "jeden Tag"), ("in the morning", "am Morgen"),
           ("in the evening", "am Abend")]
GIVING = [("gives", "gibt"), ("shows", "zeigt"), ("sends", "schickt"), ("hands", "reicht")]
LARGE = Lexicon(NOUNS_L, ADJECTIVES_L, PEOPLE_L, VERBS_L, PLACES_L, NUMBERS_L, THINKING_L)
N_TEMPLATES = 22

_DEFINITE = {"nom": {"m": "der", "f": "die", "n": "das"}, "acc": {"m": "den", "f": "die", "n": "das"},
             "dat": {"m": "dem", "f": "der", "n": "dem"}}
_INDEFINITE = {"nom": {"m": "ein", "f": "eine", "n": "ein"}, "acc": {"m": "einen", "f": "eine", "n": "ein"},
               "dat": {"m": "einem", "f": "einer", "n": "einem"}}


def adjective_ending(article: str, case: str, gender: str) -> str:
    """German adjective ending after a definite article (weak), an indefinite one (mixed), or in the
    plural (``gender`` "pl": weak -en after die, strong -e without article)."""
    if gender == "pl":
        return "en" if article == "definite" else "e"
    if case == "dat" or (case == "acc" and gender == "m"):
        return "en"
    if article == "definite":
        return "e"
    return {"m": "er", "f": "e", "n": "es"}[gender]


def noun_phrase_de(noun, adj, case: str, article: str = "definite") -> str:
    """German singular noun phrase: der rote Ball, einen roten Ball, ein rotes Buch, einer roten Lampe."""
    g = noun[4]
    det = (_DEFINITE if article == "definite" else _INDEFINITE)[case][g]
    return " ".join([det] + ([adj[1] + adjective_ending(article, case, g)] if adj else []) + [noun[2]])


def noun_phrase_en(noun, adj, article: str = "definite") -> str:
    if article == "definite":
        return _np_en(noun, adj)
    first = (adj[0] if adj else noun[0])
    det = "an" if first[0] in "aeiou" or first in ("umbrella", "ugly") else "a"
    return " ".join([det] + ([adj[0]] if adj else []) + [noun[0]])


def _predicative(adj) -> str:
    return adj[2] if len(adj) > 2 else adj[1]


def sentence(rng: random.Random) -> Sentence:
    """One random sentence pair of the larger grammar; kinds 0-6 are the small grammar's templates."""
    lex = LARGE
    noun, noun2 = rng.choice(lex.nouns), rng.choice(lex.nouns)
    adj = rng.choice(lex.adjectives) if rng.random() < 0.7 else None
    person, verb = rng.choice(lex.people), rng.choice(lex.verbs)
    kind = rng.randrange(N_TEMPLATES)
    if kind < 7:
        return _small_template(kind, rng, lex, noun, noun2, adj, person, verb)
    P, Pde = person[0], _capitalise(person[1])
    obj_en, obj_de = noun_phrase_en(noun, adj), noun_phrase_de(noun, adj, "acc")
    prefix = f" {verb[2]}" if verb[2] else ""
    if kind == 7:  # indefinite object: einen roten Ball / eine rote Lampe / ein rotes Buch
        return Sentence(f"{P} has {noun_phrase_en(noun, adj, 'indefinite')}.",
                        f"{Pde} hat {noun_phrase_de(noun, adj, 'acc', 'indefinite')}.", "have")
    if kind == 8:  # indefinite nominative: ein roter Ball / ein rotes Buch
        return Sentence(f"this is {noun_phrase_en(noun, adj, 'indefinite')}.",
                        f"Das ist {noun_phrase_de(noun, adj, 'nom', 'indefinite')}.", "this_is")
    if kind == 9:  # fronted place, V2 inversion
        prep = rng.choice(lex.places)
        return Sentence(f"there is {noun_phrase_en(noun, adj, 'indefinite')} {prep[0]} the {noun2[0]}.",
                        f"{_capitalise(prep[1])} {noun_phrase_de(noun2, None, 'dat')} ist "
                        f"{noun_phrase_de(noun, adj, 'nom', 'indefinite')}.", "there_is")
    if kind == 10:  # predicative adjective, singular or plural
        a = adj or rng.choice(lex.adjectives)
        if rng.random() < 0.5:
            return Sentence(f"the {noun[0]} is {a[0]}.",
                            f"{_capitalise(noun_phrase_de(noun, None, 'nom'))} ist {_predicative(a)}.", "predicative")
        return Sentence(f"the {noun[1]} are {a[0]}.", f"Die {noun[3]} sind {_predicative(a)}.", "predicative")
    if kind == 11:  # plural subject, adjective on the dative noun
        prep, adj2 = rng.choice(lex.places), rng.choice(lex.adjectives)
        subj_de = " ".join(["Die"] + ([adj[1] + "en"] if adj else []) + [noun[3]])
        return Sentence(f"the {adj[0] + ' ' if adj else ''}{noun[1]} are {prep[0]} the {adj2[0]} {noun2[0]}.",
                        f"{subj_de} sind {prep[1]} {noun_phrase_de(noun2, adj2, 'dat')}.", "plural_location")
    if kind == 12:  # perfect: participle at the end
        return Sentence(f"{P} has {verb[4]} {obj_en}.", f"{Pde} hat {obj_de} {verb[6]}.", "perfect")
    if kind == 13:  # modal: infinitive at the end
        modal = rng.choice(MODALS)
        return Sentence(f"{P} {modal[0]} {verb[3]} {obj_en}.", f"{Pde} {modal[1]} {obj_de} {verb[5]}.", "modal")
    if kind == 14:  # negation: nicht before the separable prefix
        return Sentence(f"{P} does not {verb[3]} {obj_en}.", f"{Pde} {verb[1]} {obj_de} nicht{prefix}.", "negation")
    if kind == 15:  # adverb: fronted (German V2 inversion) or final (German: after the verb)
        adv = rng.choice(ADVERBS)
        if rng.random() < 0.5:
            return Sentence(f"{adv[0]} {P} {verb[0]} {obj_en}.",
                            f"{_capitalise(adv[1])} {verb[1]} {person[1]} {obj_de}{prefix}.", "adverb_front")
        return Sentence(f"{P} {verb[0]} {obj_en} {adv[0]}.",
                        f"{Pde} {verb[1]} {adv[1]} {obj_de}{prefix}.", "adverb_end")
    if kind == 16:  # ditransitive: dative person before the accusative object
        give, other = rng.choice(GIVING), rng.choice(lex.people)
        return Sentence(f"{P} {give[0]} {other[0]} {obj_en}.", f"{Pde} {give[1]} {other[4]} {obj_de}.", "ditransitive")
    if kind == 17:  # yes/no question with any verb: verb first, prefix last
        return Sentence(f"does {P} {verb[3]} {obj_en}?", f"{_capitalise(verb[1])} {person[1]} {obj_de}{prefix}?",
                        "yesno_any")
    if kind in (18, 19):  # two clauses: "and" keeps V2, "because" (weil) sends the verb to the end
        other, verb2 = rng.choice(lex.people), rng.choice(lex.verbs)
        noun3, adj3 = rng.choice(lex.nouns), (rng.choice(lex.adjectives) if rng.random() < 0.5 else None)
        obj2_en, obj2_de = noun_phrase_en(noun3, adj3), noun_phrase_de(noun3, adj3, "acc")
        first_en, first_de = f"{P} {verb[0]} {obj_en}", f"{Pde} {verb[1]} {obj_de}{prefix}"
        if kind == 18:
            prefix2 = f" {verb2[2]}" if verb2[2] else ""
            return Sentence(f"{first_en} and {other[0]} {verb2[0]} {obj2_en}.",
                            f"{first_de} und {other[1]} {verb2[1]} {obj2_de}{prefix2}.", "and")
        return Sentence(f"{first_en} because {other[0]} {verb2[0]} {obj2_en}.",
                        f"{first_de}, weil {other[1]} {obj2_de} {verb2[2]}{verb2[1]}.", "because")
    if kind == 20:  # who-question
        return Sentence(f"who has {obj_en}?", f"Wer hat {obj_de}?", "who")
    # how many: strong plural adjective, object fronted, verb second
    return Sentence(f"how many {adj[0] + ' ' if adj else ''}{noun[1]} does {P} {verb[3]}?",
                    f"Wie viele {adj[1] + 'e ' if adj else ''}{noun[3]} {verb[1]} {person[1]}{prefix}?", "how_many")


def sentences(n: int, seed: int, exclude: set[str] = frozenset()) -> list:
    """n distinct sentence pairs of the larger grammar, deterministic in seed, none in exclude."""
    return _sentences(n, seed, exclude, generate=sentence)


def vocabulary() -> list[str]:
    """Every English word the larger grammar can produce."""
    lex = LARGE
    words: set[str] = set()
    parts = ([n[0] for n in lex.nouns] + [n[1] for n in lex.nouns] + [a[0] for a in lex.adjectives]
             + [p[0] for p in lex.people] + [v[i] for v in lex.verbs for i in (0, 3, 4)]
             + [x[0] for group in (lex.places, lex.numbers, lex.thinking, MODALS, ADVERBS, GIVING) for x in group])
    for part in parts:
        words.update(part.split())
    words.update("the is are i see where does what colour a an has this there not and because who how many".split())
    return sorted(words)
