"""Class names come with checkpoints from anyone and are shown as text, put in file names and sent as JSON: the
characters that make a name render as another, or that cannot be encoded, are refused."""

import pytest

from dat_core.models.base import check_class_names


@pytest.mark.parametrize("name", [
    "dog\u202e",          # right-to-left override: the rest of the line reads backwards ("tac" shown as "cat")
    "d\u2066og\u2069",    # bidi isolates
    "dog\u200f",          # right-to-left mark
    "d\u200bog",          # zero-width space: looks like "dog", is another name
    "\ufeffdog",          # byte order mark
    "do\u2060g",          # word joiner
    "dog\u2028cat",       # line separator
    "dog\u2029",          # paragraph separator
    "dog\x85",            # C1 control (next line)
    "dog\ud800",          # a lone surrogate: no UTF-8 can hold it (a file name, a JSON reply)
    "dog\ue000",          # private use: shows as nothing anyone can read
])
def test_names_that_render_as_another_or_cannot_be_encoded_are_refused(name):
    with pytest.raises(ValueError, match="class names"):
        check_class_names([name])


@pytest.mark.parametrize("name", ["chien d'eau", "Köln", "猫", "كلب", "می\u200cخواهم", "👩\u200d🔬", "Łódź café",
                                  "\U0001fa77"])   # an emoji of Unicode 15, unassigned to Python 3.11
def test_names_in_any_script_stay_allowed(name):
    """Zero-width (non-)joiners are letters' business in Persian, Indic scripts and emoji: kept."""
    assert check_class_names([name]) == [name]
