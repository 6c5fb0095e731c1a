"""NameData loader on a fixture written here in the tutorial's format (one <Language>.txt per language)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import torch

from weightsim.data import namedata as nd
from weightsim.data.namedata import ALPHABET, VOCAB_SIZE, decode, fold, namedata
from weightsim.errors import DataError, WeightsimWarning

LANGS = {
    "Zulu": ["Dlamini", "Zulu", "Nkosi", "Mkhize", "Ngcobo", "Dube"],
    "Czech": ["Dvořák", "Novák", "Černý", "Svoboda", "Novák", "Procházka", "Kučera", "Veselý"],
    "German": ["Müller", "Groß", "Schäfer", "Weiß", "Bäcker"],
    "Irish": ["O'Brien", "Mc-Guire", "Ó Súilleabháin", "Byrne"],
    "Polish": ["Łukasz", "Wójcik", "Kowalczyk", "Zieliński"],
    "Arabic": ["Nader", "Nader", "Haddad", "Saliba", "Tahan/1", "Koury"],
}


def write_names(root: Path, langs: dict[str, list[str]] = LANGS) -> Path:
    root.mkdir(parents=True)
    for lang, names in langs.items():
        (root / f"{lang}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def names_dir(tmp_path: Path) -> Path:
    return write_names(tmp_path / "names")


def test_alphabet_is_fixed():
    assert ALPHABET == "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .,;'-" and VOCAB_SIZE == 59
    assert fold("Dvořák") == ("Dvorak", 0)
    assert fold("Groß") == ("Gross", 0) and fold("Łukasz") == ("Lukasz", 0)
    assert fold("Ó Súilleabháin") == ("O Suilleabhain", 0)
    assert fold("Tahan/1") == ("Tahan", 2)


def test_sequences_tasks_and_info(names_dir: Path):
    ts = namedata(str(names_dir), train_tasks=2, unseen_tasks=1)
    # languages in sorted file order, task i = languages 2i, 2i+1
    assert [t.class_names for t in ts.tasks] == [["Arabic", "Czech"], ["German", "Irish"], ["Polish", "Zulu"]]
    assert ts.x.dtype == torch.int64 and ts.x.shape == (33, 14) and ts.input_shape == (14,)
    assert ts.info["vocab_size"] == 59 and ts.info["max_len"] == 14 and ts.info["dropped_chars"] == 2
    assert ts.x.min() >= 0 and ts.x.max() < 59
    texts = [decode(r) for r in ts.x]
    assert "Suilleabhain" not in texts and "O Suilleabhain" in texts and "Mc-Guire" in texts
    row = ts.x[texts.index("Nader")]
    assert row[:5].tolist() == [ALPHABET.index(c) + 1 for c in "Nader"] and (row[5:] == 0).all()
    for t in ts.tasks:
        assert set(t.train_y.tolist()) == {0, 1} == set(t.test_y.tolist())
        for idx, y in ((t.train_idx, t.train_y), (t.test_idx, t.test_y)):
            assert torch.equal(ts.y[idx], torch.tensor(t.classes)[y])
        assert not set(t.train_idx.tolist()) & set(t.test_idx.tolist())


def test_split_is_fixed_and_options(names_dir: Path):
    a, b = (namedata(str(names_dir), train_tasks=3, unseen_tasks=0) for _ in range(2))
    assert all(torch.equal(s.train_idx, t.train_idx) for s, t in zip(a.tasks, b.tasks))
    u = namedata(str(names_dir), train_tasks=3, unseen_tasks=0, unique=True)
    assert u.x.shape[0] == a.x.shape[0] - 2  # the repeated Novák and Nader
    with pytest.warns(WeightsimWarning, match=r"namedata: 9 of 33 names are longer than dataset.max_len=6 and are "
                                             r"cut to their first 6 characters \(the longest has 14\): "
                                             r"dataset.max_len=null keeps every name whole"):
        short = namedata(str(names_dir), train_tasks=3, unseen_tasks=0, max_len=6)
    assert short.x.shape[1] == 6 and short.info["truncated_names"] == 9
    assert "Svobod" in [decode(r) for r in short.x]


def test_missing_folder(tmp_path: Path):
    with pytest.raises(DataError) as e:
        namedata(str(tmp_path / "names"))
    msg = str(e.value)
    assert "no folder" in msg and "<Language>.txt" in msg and nd.SOURCE.url in msg and "dataset.download=true" in msg


def test_empty_folder(tmp_path: Path):
    (tmp_path / "names").mkdir()
    with pytest.raises(DataError, match=r"has no \*.txt"):
        namedata(str(tmp_path / "names"))


def test_empty_file_named(names_dir: Path):
    (names_dir / "Irish.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"Irish.txt holds no names"):
        namedata(str(names_dir), train_tasks=2, unseen_tasks=0)


def test_non_utf8_file_named(names_dir: Path):
    (names_dir / "German.txt").write_bytes("Müller\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"German.txt is not UTF-8"):
        namedata(str(names_dir), train_tasks=2, unseen_tasks=0)


def make_zip(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    src = write_names(tmp_path / "src" / "data" / "names")
    (tmp_path / "src" / "data" / "eng-fra.txt").write_text("other tutorial data\n")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted((tmp_path / "src").rglob("*")):
            z.write(p, p.relative_to(tmp_path / "src").as_posix())
    return archive, {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}


def test_download_checks_every_file(tmp_path: Path, monkeypatch):
    archive, sums = make_zip(tmp_path)
    monkeypatch.setattr(nd, "SOURCE", nd.Source("namedata", archive.as_uri(), None, "data/names", sums))
    target = tmp_path / "data" / "names"
    ts = namedata(str(target), download=True, train_tasks=3, unseen_tasks=0)
    assert ts.x.shape[0] == 33 and sorted(p.name for p in target.iterdir()) == sorted(sums)


def test_download_rejects_changed_file(tmp_path: Path, monkeypatch):
    archive, sums = make_zip(tmp_path)
    sums["Czech.txt"] = "0" * 64
    monkeypatch.setattr(nd, "SOURCE", nd.Source("namedata", archive.as_uri(), None, "data/names", sums))
    with pytest.raises(DataError, match=r"checksum mismatch for data/names/Czech.txt"):
        namedata(str(tmp_path / "data" / "names"), download=True)
    assert list((tmp_path / "data").iterdir()) == []


def test_official_checksums_cover_18_languages():
    assert len(nd.NAME_FILES_SHA256) == 18 and all(len(v) == 64 for v in nd.NAME_FILES_SHA256.values())


def test_names_with_no_letter_left_are_named_in_a_warning(tmp_path: Path):
    langs = {**LANGS, "Zulu": LANGS["Zulu"] + ["\u4e2d\u6587", "123"]}  # nothing of the alphabet survives folding
    with pytest.warns(WeightsimWarning, match=r"namedata: 2 names have no character left in the alphabet after "
                                             r"folding to ASCII and are left out \(e.g. '\u4e2d\u6587' in Zulu.txt\)"):
        ts = namedata(str(write_names(tmp_path / "names", langs)), train_tasks=3, unseen_tasks=0)
    assert torch.bincount(ts.y)[5] == len(LANGS["Zulu"])  # Zulu is class 5; only its real names are kept
