"""graft zeroshot's --classes: a NAME=WNID whose name no class folder can have (empty, '..',
with a slash), or with nothing after '=', is refused in its line before anything is written;
such a class could never be matched by graft evaluate's folders."""
from __future__ import annotations

import pytest

from graft.curation.wordnet import resolve
from graft.errors import GraftError


@pytest.mark.parametrize("bad", ["=n02206856", "a/b=n02206856", "..=n02206856", "bee="])
def test_a_class_name_no_folder_can_have_is_refused_in_one_line(bad):
    with pytest.raises(GraftError) as error:
        resolve(f"{bad},ant")
    lines = str(error.value).splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"{bad}: give NAME=WNID"), lines


def test_a_plain_name_and_a_chosen_sense_still_resolve():
    assert [c.name for c in resolve("ant, bee=n02206856")] == ["ant", "bee"]


@pytest.mark.parametrize("spec", ["ant,,bee", "ant,bee,", ",ant,bee"])
def test_an_empty_class_name_is_refused_in_one_line(spec):
    with pytest.raises(GraftError) as error:
        resolve(spec)
    lines = str(error.value).splitlines()
    assert len(lines) == 2 and "empty class name" in lines[1], lines


def test_a_repeated_name_is_one_line():
    with pytest.raises(GraftError) as error:
        resolve("ant,ant,bee")
    lines = str(error.value).splitlines()
    assert lines[1:] == ["a class is named twice: ant"], lines
