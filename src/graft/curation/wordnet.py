"""Class names -> WordNet 3.0 noun synsets -> the ImageNet-1k classes beneath them.

The table (``wordnet_imagenet.json.gz``, built by ``tools/make_wordnet_table.py`` from Debian's
``wordnet-base`` and ImageNet's class ids) holds every noun synset with at least one of the
1000 classes in its hyponym closure, the lemmas naming them in WordNet's sense order, and the
irregular plurals. A zero-shot class's probability is the sum of the backbone's ImageNet
probabilities over its classes (the WordNet-hierarchy baseline of zero-shot learning; ConSE,
Norouzi et al. 2014, combines the top classes' embeddings instead).
"""
from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from graft.errors import GraftError

# WordNet's morphy rules for nouns: (suffix, replacement)
_SUFFIXES = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
             ("ies", "y"), ("s", ""))


@dataclass(frozen=True)
class ZeroShotClass:
    """``name`` as given; ``wnid`` (``n`` + WordNet offset) of its synset; its ``words`` and
    ``gloss``; ``imagenet``: indices (0..999) of the ImageNet classes beneath it."""

    name: str
    wnid: str
    words: tuple[str, ...]
    gloss: str
    imagenet: tuple[int, ...]

    def describe(self, table: dict) -> dict:
        names = [table["synsets"].get(table["imagenet"][i][1:], {}).get("words", ["?"])[0] for i in self.imagenet]
        return {"wnid": self.wnid, "synset": ", ".join(self.words), "gloss": self.gloss,
                "imagenet_classes": len(self.imagenet), "examples": names[:8]}


@functools.lru_cache(maxsize=1)
def load_table() -> dict:
    with resources.files("graft.curation").joinpath("wordnet_imagenet.json.gz").open("rb") as raw:
        return json.loads(gzip.decompress(raw.read()).decode("utf-8"))


def _lemma_forms(name: str, table: dict) -> list[str]:
    word = "_".join(name.strip().lower().replace("-", " ").split())
    forms = [word]
    if word in table["exceptions"]:
        forms.append(table["exceptions"][word])
    forms += [word[: -len(suffix)] + replacement for suffix, replacement in _SUFFIXES if word.endswith(suffix)]
    return [form for form in forms if form]


def _sense(name: str, offset: str, table: dict) -> ZeroShotClass:
    synset = table["synsets"][offset]
    return ZeroShotClass(name, "n" + offset, tuple(synset["words"]), synset["gloss"], tuple(synset["classes"]))


def _senses_text(offsets: list[str], table: dict, name: str) -> str:
    return "; ".join(f"{name}=n{o} ({', '.join(table['synsets'][o]['words'][:3])}: "
                     f"{table['synsets'][o]['gloss'].split(';')[0][:70]}; {len(table['synsets'][o]['classes'])} "
                     "ImageNet classes)" for o in offsets[:6])


def resolve(spec: str) -> list[ZeroShotClass]:
    """``"ant,bee"`` or ``"bee=n02206856,..."`` -> one :class:`ZeroShotClass` per name.

    Every name that has no WordNet noun sense with an ImageNet class beneath it, or more than
    one (ambiguous: the senses to choose from are listed as NAME=WNID), and names whose
    ImageNet classes overlap, are one line each of a single GraftError."""
    table = load_table()
    chosen, problems = [], []
    items = [part.strip() for part in spec.split(",")]
    if len(items) > 1 and not all(items):
        # "ant,,bee" or a trailing comma: a class left out by a typo must not pass unnoticed
        problems.append(f"{spec!r}: an empty class name (two commas in a row, or one at an end); "
                        "name every class once")
    for item in [part for part in items if part]:
        name, sep, wnid = (part.strip() for part in item.partition("="))
        if sep and (not wnid or not name or name in (".", "..") or "/" in name or "\\" in name):
            # the name is a class: graft evaluate matches it with a folder of that name
            problems.append(f"{item}: give NAME=WNID, a WordNet id after '=' and a name a class folder can have "
                            "(not empty, '.' or '..', no slash)")
            continue
        if wnid:
            offset = wnid.lower().lstrip("n")
            if offset not in table["synsets"]:
                problems.append(f"{name}={wnid}: no WordNet noun synset with an ImageNet class beneath it has this id")
            else:
                chosen.append(_sense(name, offset, table))
            continue
        offsets = next((table["lemmas"][f] for f in _lemma_forms(name, table) if f in table["lemmas"]), [])
        if not offsets:
            problems.append(f"{name}: no ImageNet class beneath any WordNet noun of this name; name a WordNet noun "
                            "above ImageNet classes, or give NAME=WNID")
        elif len(offsets) > 1:
            problems.append(f"{name}: ambiguous, choose a sense: {_senses_text(offsets, table, name)}")
        else:
            chosen.append(_sense(name, offsets[0], table))
    names = [c.name for c in chosen]
    if len(set(names)) < len(names):
        problems.append(f"a class is named twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    for i, first in enumerate(chosen):
        for second in chosen[i + 1:]:
            # a repeated name is already its own line above
            if first.name != second.name and set(first.imagenet) & set(second.imagenet):
                problems.append(f"{first.name} and {second.name} share ImageNet classes (one lies beneath the other): "
                                "choose names whose classes do not overlap")
    if problems:
        raise GraftError(f"--classes: {len(problems)} problem(s), nothing written:\n" + "\n".join(problems))
    if len(chosen) < 2:
        raise GraftError("--classes: a classifier needs at least two classes")
    return chosen


def membership(classes: list[ZeroShotClass], n_source: int = 1000) -> np.ndarray:
    """(K, n_source) float32: 1 where ImageNet class j lies beneath class k."""
    matrix = np.zeros((len(classes), n_source), np.float32)
    for row, zero_shot_class in enumerate(classes):
        matrix[row, list(zero_shot_class.imagenet)] = 1.0
    return matrix
