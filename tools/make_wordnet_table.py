"""Build src/graft/curation/wordnet_imagenet.json.gz: WordNet 3.0 nouns -> the ImageNet-1k
classes beneath them, for ``graft zeroshot`` (no download at run time).

    apt-get install wordnet-base      # WordNet 3.0 database files in /usr/share/wordnet
    python tools/make_wordnet_table.py [--wordnet /usr/share/wordnet]

Reads data.noun (synsets, glosses, hyponym pointers ``~`` and instance hyponyms ``~i``),
index.noun (each lemma's synsets in sense order) and noun.exc (irregular plurals), and
ImageNet-1k's 1000 WordNet ids in class-index order from timm (``timm.data.ImageNetInfo``).
Keeps only synsets with at least one of the 1000 classes beneath them (the hyponym closure,
the synset itself included) and the lemmas naming them. WordNet 3.0's licence (Princeton)
allows redistribution with its notice, which the table carries.
"""
from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "graft" / "curation" / "wordnet_imagenet.json.gz"
NOTICE = ("WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Permission to use, copy, "
          "modify and distribute this software and database and its documentation for any purpose and without fee "
          "or royalty is hereby granted, provided that you agree to comply with the following copyright notice and "
          "statements, including the disclaimer, and that the same appear on ALL copies of the software, database "
          "and documentation, including modifications that you make for internal use or for distribution. THIS "
          "SOFTWARE AND DATABASE IS PROVIDED \"AS IS\" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR "
          "WARRANTIES, EXPRESS OR IMPLIED. The name of Princeton University or Princeton may not be used in "
          "advertising or publicity pertaining to distribution of the software and/or database.")


def read_synsets(path: Path) -> dict[str, dict]:
    synsets = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # the licence header
            continue
        head, _, gloss = line.partition(" | ")
        fields = head.split()
        offset, n_words = fields[0], int(fields[3], 16)
        words = [fields[4 + 2 * k] for k in range(n_words)]
        at = 4 + 2 * n_words
        n_pointers = int(fields[at])
        children = [fields[at + 1 + 4 * k + 1] for k in range(n_pointers)
                    if fields[at + 1 + 4 * k] in ("~", "~i") and fields[at + 1 + 4 * k + 2] == "n"]
        synsets[offset] = {"words": words, "gloss": gloss.strip(), "children": children}
    return synsets


def read_index(path: Path) -> dict[str, list[str]]:
    lemmas = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        fields = line.split()
        n_senses, n_pointers = int(fields[2]), int(fields[3])
        lemmas[fields[0]] = fields[4 + n_pointers + 2:4 + n_pointers + 2 + n_senses]
    return lemmas


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet", default="/usr/share/wordnet")
    args = parser.parse_args()
    from timm.data import ImageNetInfo

    root = Path(args.wordnet)
    synsets = read_synsets(root / "data.noun")
    info = ImageNetInfo()
    wnids = [info.index_to_label_name(i) for i in range(info.num_classes())]
    leaf_index = {wnid[1:]: i for i, wnid in enumerate(wnids)}
    leaves: dict[str, set[int]] = {}

    def beneath(offset: str) -> set[int]:  # memoised hyponym closure (WordNet's noun graph is acyclic)
        if offset not in leaves:
            found = {leaf_index[offset]} if offset in leaf_index else set()
            leaves[offset] = found
            for child in synsets[offset]["children"]:
                found |= beneath(child)
        return leaves[offset]

    import sys

    sys.setrecursionlimit(10000)
    kept = {offset: sorted(beneath(offset)) for offset in synsets if beneath(offset)}
    lemmas = {lemma: [o for o in offsets if o in kept] for lemma, offsets in read_index(root / "index.noun").items()}
    lemmas = {lemma: offsets for lemma, offsets in lemmas.items() if offsets}
    exceptions = {}
    for line in (root / "noun.exc").read_text(encoding="latin-1").splitlines():
        inflected, *bases = line.split()
        bases = [b for b in bases if b in lemmas]
        if bases:
            exceptions[inflected] = bases[0]
    table = {"notice": NOTICE, "source": "WordNet 3.0 (Debian wordnet-base) x ImageNet-1k class ids (timm)",
             "imagenet": wnids,
             "synsets": {o: {"words": synsets[o]["words"], "gloss": synsets[o]["gloss"], "classes": kept[o]}
                         for o in kept},
             "lemmas": lemmas, "exceptions": exceptions}
    with gzip.open(OUT, "wt", encoding="utf-8", compresslevel=9) as handle:
        json.dump(table, handle, separators=(",", ":"), sort_keys=True)
    print(f"wrote {OUT}: {len(kept)} synsets, {len(lemmas)} lemmas, {len(exceptions)} plurals, "
          f"{OUT.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
