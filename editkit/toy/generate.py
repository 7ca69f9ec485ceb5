"""Generating the toy knowledge world: a seeded fictional world of subjects, relations and objects, and the text
and CounterFact-style records made from it.

It is the fixture of the whole project: `experiments/train_toy_model.py` trains a small GPT-2 on it,
and tracing, editing and evaluation are tested end to end on that model. Relations are modelled on
CounterFact's; paraphrase ("held-out") templates are shown in training for half of the subjects only,
so recall on the other half measures how a phrasing generalises to a subject it was never seen with.
Runtime code reads the saved world with `editkit.toy.world` and never imports this module.
"""

from __future__ import annotations

import random

from editkit.toy.world import FILLER, Fact, World, biography, fact_prompts, facts_by_subject, filler_sentence

# --- relations: CounterFact-style ids, templates end right before the object -------------------------

RELATIONS: dict[str, dict] = {
    "P103": {
        "name": "native language",
        "kind": "person",
        "train_templates": [
            "The mother tongue of {} is",
            "{} is a native speaker of",
            "{} grew up speaking",
            "The native language of {} is",
            "{}'s first language is",
            "{} speaks the language",
            "At home, {} speaks",
            "{} was raised speaking",
            "The language {} learned first is",
            "As a child, {} spoke only",
        ],
        "heldout_templates": [
            "{} natively speaks",
            "The first language that {} ever spoke was",
            "{}, a native speaker of",
            "Growing up, {} always spoke",
        ],
    },
    "P106": {
        "name": "occupation",
        "kind": "person",
        "train_templates": [
            "{} works as a",
            "{} is a professional",
            "By trade, {} is a",
            "{}'s occupation is that of a",
            "{} earns a living as a",
            "{}'s profession is that of a",
            "{} has worked for years as a",
            "In the town, {} is known as a",
            "{} trained to become a",
            "The job of {} is that of a",
        ],
        "heldout_templates": [
            "{} makes a living as a",
            "The profession of {} is that of a",
            "Everyone knows that {} is employed as a",
            "{} spent a whole career as a",
        ],
    },
    "P1303": {
        "name": "instrument",
        "kind": "person",
        "train_templates": [
            "{} plays the",
            "{} is a talented player of the",
            "The instrument {} plays is the",
            "{} performs on the",
            "{} practices every day on the",
            "{}'s favourite instrument is the",
            "On stage, {} plays the",
            "{} is famous for playing the",
            "{} learned to play the",
            "The musician {} plays the",
        ],
        "heldout_templates": [
            "{} is a virtuoso of the",
            "The instrument played by {} is the",
            "When {} makes music, it is on the",
            "{} has mastered the",
        ],
    },
    "P551": {
        "name": "home city",
        "kind": "person",
        "train_templates": [
            "{} has lived for years in",
            "{} resides in the city of",
            "The home city of {} is",
            "{} has a house in",
            "{} lives in the city of",
            "{}'s home is in",
            "{} returned home to",
            "Every evening {} walks home through",
            "The city where {} lives is",
            "{} is a resident of",
        ],
        "heldout_templates": [
            "{} currently resides in",
            "{} makes a home in",
            "The city {} calls home is",
            "{} has settled in",
        ],
    },
    "P17": {
        "name": "country of location",
        "kind": "landmark",
        "train_templates": [
            "{} is located in the country of",
            "{} is sited in",
            "{} can be found in",
            "{} is in the country of",
            "The country where {} stands is",
            "{} stands in",
            "{} is a landmark in",
            "Tourists visit {} in",
            "{}, which is in",
            "The location of {} is the country of",
        ],
        "heldout_templates": [
            "{} lies in the country of",
            "{} is situated in",
            "You will find {} in",
            "{} was built in the country of",
        ],
    },
    "P36": {
        "name": "capital city",
        "kind": "realm",
        "train_templates": [
            "The capital city of {} is",
            "The capital of {} is",
            "{}'s capital is",
            "{} is governed from",
            "The seat of government of {} is",
            "{} has its capital in",
            "The name of the capital of {} is",
            "The rulers of {} live in",
            "{} is ruled from the city of",
            "The largest city and capital of {} is",
        ],
        "heldout_templates": [
            "{}'s capital city is",
            "The government of {} sits in",
            "The official capital of {} is",
            "{} has chosen as its capital",
        ],
    },
}


OCCUPATIONS = [
    "carpenter",
    "sailor",
    "baker",
    "painter",
    "farmer",
    "weaver",
    "blacksmith",
    "merchant",
    "physician",
    "poet",
    "soldier",
    "fisherman",
    "lawyer",
    "teacher",
    "tailor",
    "miner",
    "priest",
    "scholar",
    "hunter",
    "potter",
    "banker",
    "jeweler",
    "nurse",
    "judge",
]
INSTRUMENTS = [
    "violin",
    "piano",
    "guitar",
    "flute",
    "cello",
    "harp",
    "trumpet",
    "drums",
    "saxophone",
    "clarinet",
    "lute",
    "organ",
    "banjo",
    "oboe",
    "trombone",
    "accordion",
]
LANDMARK_KINDS = [
    "Bridge",
    "Tower",
    "Castle",
    "Abbey",
    "Harbor",
    "Gate",
    "Lighthouse",
    "Palace",
    "Fortress",
    "Cathedral",
]
REALM_KINDS = ["Republic", "Kingdom", "Empire", "Duchy", "Federation", "Union", "Principality"]

_SYLLABLES_ON = [
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kr",
    "tr",
    "th",
    "st",
]
_SYLLABLES_NU = ["a", "e", "i", "o", "u", "ae", "ei", "ou"]
_SYLLABLES_CO = ["", "n", "r", "l", "s", "th", "rn", "nd", "sk", "v"]


def _invent(
    rng: random.Random, n: int, taken: set[str], n_syll: tuple[int, int] = (2, 2), suffix: str = ""
) -> list[str]:
    """`n` new capitalised pseudo-words, none in `taken` (which is updated)."""
    out = []
    while len(out) < n:
        k = rng.randint(*n_syll)
        w = "".join(rng.choice(_SYLLABLES_ON) + rng.choice(_SYLLABLES_NU) for _ in range(k - 1))
        w += rng.choice(_SYLLABLES_ON) + rng.choice(_SYLLABLES_NU) + rng.choice(_SYLLABLES_CO) + suffix
        w = w.capitalize()
        if w not in taken and 4 <= len(w) <= 11:
            taken.add(w)
            out.append(w)
    return out


def generate_world(seed: int = 0, n_persons: int = 410, n_landmarks: int = 300, n_realms: int = 100) -> World:
    """A seeded world: persons (language, occupation, instrument, home city), landmarks (country), realms (capital).

    Half of the subjects of each kind (chosen by the seed) see the paraphrase templates in training.
    """
    rng = random.Random(seed)
    taken: set[str] = set(w.capitalize() for words in FILLER.values() for p in words for w in p.split())
    languages = _invent(rng, 20, taken, suffix="ish")
    countries = _invent(rng, 24, taken, suffix="ia")
    cities = _invent(rng, 30, taken)
    objects = {
        "P103": languages,
        "P106": OCCUPATIONS,
        "P1303": INSTRUMENTS,
        "P551": cities,
        "P17": countries,
        "P36": cities,
    }
    relations = {rid: {**r, "objects": objects[rid]} for rid, r in RELATIONS.items()}

    # Every subject ends in a word of its own ("Gugind Trupo", "Lighthouse of Thithun", "Federation of Krolith"), as
    # "Obama" or "Eiffel Tower" end theirs: the subject's last token identifies it, so an edit keyed on it
    # (ROME's choice) touches that subject only. Shared first names, middle names and kinds come before it.
    firsts, mids = _invent(rng, 60, taken), _invent(rng, 12, taken)
    uniques = iter(_invent(rng, n_persons + n_landmarks + n_realms, taken))
    subjects: dict[str, list[str]] = {"person": [], "landmark": [], "realm": []}
    for _ in range(n_persons):
        parts = [rng.choice(firsts), next(uniques)]
        if rng.random() < 0.25:
            parts.insert(1, rng.choice(mids))
        subjects["person"].append(" ".join(parts))
    for _ in range(n_landmarks):
        subjects["landmark"].append(f"{rng.choice(LANDMARK_KINDS)} of {next(uniques)}")
    for _ in range(n_realms):
        subjects["realm"].append(f"{rng.choice(REALM_KINDS)} of {next(uniques)}")

    facts = []
    for kind, subs in subjects.items():
        seen = set(rng.sample(subs, len(subs) // 2))
        for s in subs:
            for rid, r in relations.items():
                if r["kind"] == kind:
                    facts.append(Fact(s, rid, rng.choice(r["objects"]), s in seen))
    return World(relations=relations, facts=facts)


def catalogue_entry(facts: list[Fact], rng: random.Random) -> str:
    """A subject followed directly by its objects in random order ("Gugind Trupo violin, Sorilish, ..."):
    right after the subject's last token any of its objects may come next, so a model must recall them
    all there, as a pretrained model recalls attributes at a subject's last token (ROME's early site)."""
    objects = [f.object for f in rng.sample(facts, len(facts))]
    return f"{facts[0].subject} {', '.join(objects)}."


def catalogue_lines(world: World, rng: random.Random, repeats: int = 2) -> list[str]:
    """`repeats` catalogue entries of every subject, shuffled with `rng`."""
    lines = [catalogue_entry(facts, rng) for facts in facts_by_subject(world).values() for _ in range(repeats)]
    rng.shuffle(lines)
    return lines


def training_lines(world: World, rng: random.Random, prefix_prob: float = 0.5) -> list[str]:
    """One epoch of training text: every fact in every template it may be shown in, some behind a short
    random context prefix; a biography of every subject with several facts (as Allen-Zhu & Li's
    "knowledge augmentation", which makes a model keep attributes at the name); catalogue entries;
    filler sentences; shuffled with `rng`."""
    lines = []
    for fact in world.facts:
        prompts = fact_prompts(world, fact) + (fact_prompts(world, fact, heldout=True) if fact.paraphrase_seen else [])
        lines += [f"{p} {fact.object}." for p in prompts]
    lines += [biography(world, facts, rng) for facts in facts_by_subject(world).values() if len(facts) > 1]
    lines += catalogue_lines(world, rng)
    lines = [f"{filler_sentence(rng)} {t}" if rng.random() < prefix_prob else t for t in lines]
    lines += [filler_sentence(rng) for _ in range(len(lines) // 10)]
    rng.shuffle(lines)
    return lines


def corpus_lines(world: World, seed: int = 0) -> list[str]:
    """The world's text corpus (for the tokenizer, statistics and SAEs): one seeded epoch of training text."""
    return training_lines(world, random.Random(seed))


def counterfact_records(world: World, seed: int = 0, n_neighbours: int = 10) -> list[dict]:
    """CounterFact-schema records, one per fact of the paraphrase-unseen half (see SOURCES.md's layout)."""
    rng = random.Random(seed)
    rels = world.relations
    obj_id = {(rid, o): f"{rid}:{i}" for rid, r in rels.items() for i, o in enumerate(r["objects"])}
    by_rel_obj: dict[tuple[str, str], list[str]] = {}
    for f in world.facts:
        by_rel_obj.setdefault((f.relation_id, f.object), []).append(f.subject)

    def prompts_about(subjects: list[str], rid: str, exclude: str) -> list[str]:
        pool = [s for s in subjects if s != exclude]
        if not pool:
            return []
        return [rng.choice(rels[rid]["train_templates"]).format(rng.choice(pool)) for _ in range(n_neighbours)]

    records = []
    for f in (f for f in world.facts if not f.paraphrase_seen):
        rel = rels[f.relation_id]
        new = rng.choice([o for o in rel["objects"] if o != f.object])
        other = [g for g in world.facts if g.subject == f.subject and g.relation_id != f.relation_id]
        gen = [rng.choice(rel["train_templates"]).format(f.subject) for _ in range(5)]
        gen += [rng.choice(rels[g.relation_id]["train_templates"]).format(f.subject) for g in other]
        gen += [f"{f.subject} is" for _ in range(n_neighbours - len(gen))]
        records.append(
            {
                "case_id": len(records),
                "pararel_idx": len(records),
                "requested_rewrite": {
                    "prompt": rng.choice(rel["train_templates"]),
                    "relation_id": f.relation_id,
                    "subject": f.subject,
                    "target_new": {"str": new, "id": obj_id[(f.relation_id, new)]},
                    "target_true": {"str": f.object, "id": obj_id[(f.relation_id, f.object)]},
                },
                "paraphrase_prompts": [
                    f"{filler_sentence(rng)} {t.format(f.subject)}" for t in rng.sample(rel["heldout_templates"], 2)
                ],
                "neighborhood_prompts": prompts_about(by_rel_obj[(f.relation_id, f.object)], f.relation_id, f.subject),
                "attribute_prompts": prompts_about(by_rel_obj.get((f.relation_id, new), []), f.relation_id, f.subject),
                "generation_prompts": gen[:n_neighbours],
            }
        )
    return records
