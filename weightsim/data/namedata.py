"""NameData: the surnames of the PyTorch char-RNN tutorial, one ``<Language>.txt`` per language.

Each name becomes a row of character codes over a fixed alphabet (``ALPHABET``), right-padded
with 0. Characters are first reduced to ASCII as in the tutorial (Unicode NFKD, accents dropped),
plus a few letters that NFKD does not decompose (``ASCII_FOLD``); what is still outside the
alphabet is dropped and counted in ``TaskSet.info["dropped_chars"]``.

Languages are the files in sorted name order (the tutorial's glob order, 18 in the official data:
Arabic, Chinese, Czech, Dutch, English, French, German, Greek, Irish, Italian, Japanese, Korean,
Polish, Portuguese, Russian, Scottish, Spanish, Vietnamese); task i is languages 2i and 2i+1
(9 tasks of 2 languages, the paper's count).
"""

from __future__ import annotations

import string
import unicodedata
from pathlib import Path

import numpy as np
import torch

from weightsim.data.common import dataset_dir, require
from weightsim.data.download import Source
from weightsim.data.tasks import TaskSet, build_taskset, plan_groups
from weightsim.errors import ConfigError, DataError, warn

FOLDER = "names"
# code 0 is padding; code i (1..58) is ALPHABET[i-1]
ALPHABET = string.ascii_letters + " .,;'-"
PAD = 0
VOCAB_SIZE = len(ALPHABET) + 1
CODES = {ch: i + 1 for i, ch in enumerate(ALPHABET)}
# letters without a Unicode decomposition that still have an obvious ASCII spelling
ASCII_FOLD = {"ß": "ss", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe",
              "Œ": "OE", "đ": "d", "Đ": "D", "ı": "i"}

# sha256 of the 18 files of data/names in https://download.pytorch.org/tutorial/data.zip. The zip
# itself is rebuilt now and then (it also holds other tutorials' data), so the content is pinned.
NAME_FILES_SHA256 = {
    "Arabic.txt": "6f424a8dbe51cbbbabab7a57d38b617210125e4e3991f3c657cb79b8f104bafc",
    "Chinese.txt": "49263ef55a8cb1740e841d65cad8214b2f9b5b869bc534c811746422496fa91e",
    "Czech.txt": "145bbbd6d0816578f03388e92c264d39ef1c60df920b081d371fa5c5cc055a8e",
    "Dutch.txt": "924f32b635170eae561f84538632138fc07d4c8bbd70ba3fb980de1ecc4d2af3",
    "English.txt": "9cca037066d3d5989e24bc01801416162de506b5e28e15b7c092a47905d29bf2",
    "French.txt": "81e65b36c60ed5b89a17422f6edcadbb89546f38ad69e960e64e7ba682012a95",
    "German.txt": "7449cd590b97a733e18d613a4155decd77ec35dc5f8aadd7a82204dce4f051db",
    "Greek.txt": "3555b5186de7f401e6d991b088e9e644ca3099116477818c25ab5793801389e6",
    "Irish.txt": "cf8c7013256252a88d2503127b87282a11f21b2ff6db1bded68834c19a1ec058",
    "Italian.txt": "f88414c27d0606a11a678b4859277828c2565d6cc4d9ee932deef6e94f3b35e4",
    "Japanese.txt": "e0e717e114fec3e7eade4d9dabe0067c475f43147e36a22b47902ee76ad9e67f",
    "Korean.txt": "cd54221ccb362a6cba4c78828838cf3268a0e59744767a37cf6ec4b74036b136",
    "Polish.txt": "45bab898af2f60ed3a728bbf6980e28821011a7caa53227553b5785903a40826",
    "Portuguese.txt": "50a8735f41f4f73757c8ce5b16cb0275cd86b2b214bcbc8c9805f508cb131c53",
    "Russian.txt": "43b3e64ce351f77f1ac9e0cdf7566012d127f4371875fd25208845b5c9d6f7c3",
    "Scottish.txt": "78d0252711d87d948ea86fe34826c51d2d794a8e52d15b5d6f7b6244d45d62dd",
    "Spanish.txt": "1bcb462ed3316756a85781d68232bddae04498fdddd5d9219c53fd1fbdeba7a7",
    "Vietnamese.txt": "4761c0de374ebdfd7dea7faa6fbac707d96cad9a6fc91d3626c462cbd08b6c76",
}
SOURCE = Source("namedata", "https://download.pytorch.org/tutorial/data.zip", md5=None,
                member="data/names", files_sha256=NAME_FILES_SHA256)
LAYOUT = f"{FOLDER}/ with one UTF-8 file per language, <Language>.txt, one name per line"


def fold(name: str) -> tuple[str, int]:
    """(the name over ALPHABET, how many characters were dropped): ASCII_FOLD, NFKD, accents
    (combining marks) removed, any other character outside ALPHABET dropped."""
    decomposed = unicodedata.normalize("NFKD", "".join(ASCII_FOLD.get(ch, ch) for ch in name))
    base = [ch for ch in decomposed if not unicodedata.combining(ch)]
    kept = "".join(ch for ch in base if ch in CODES)
    return kept, len(base) - len(kept)


def to_ascii(name: str) -> str:
    """The name over ALPHABET (see ``fold``)."""
    return fold(name)[0]


def encode(names: list[str], max_len: int) -> torch.Tensor:
    """(N, max_len) int64 codes of already-ASCII names, right-padded with PAD, cut at max_len."""
    out = np.zeros((len(names), max_len), dtype=np.int64)
    for i, n in enumerate(names):
        codes = [CODES[ch] for ch in n[:max_len]]
        out[i, :len(codes)] = codes
    return torch.from_numpy(out)


def decode(codes: torch.Tensor) -> str:
    """The inverse of ``encode`` for one row (padding dropped)."""
    return "".join(ALPHABET[int(c) - 1] for c in codes if int(c) != PAD)


def read_languages(root: Path) -> dict[str, list[str]]:
    """{language: [raw name, ...]} of every ``*.txt`` in ``root``, sorted by language; blank lines skipped."""
    files = sorted(root.glob("*.txt"))
    if not files:
        raise DataError(f"namedata: {root} has no <Language>.txt files (expected layout: {LAYOUT}); "
                        f"download {SOURCE.url} and take data/names from it, or set dataset.download=true")
    out = {}
    for f in files:
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise DataError(f"namedata: {f} is not UTF-8 text ({e.reason} at byte {e.start}): corrupt?") from None
        names = [line.strip() for line in lines if line.strip()]
        if not names:
            raise DataError(f"namedata: {f} holds no names (empty or truncated file)")
        out[f.stem] = names
    return out


def namedata(data_dir: str | None = None, download: bool = False, train_tasks: int | None = 6,
             unseen_tasks: int | None = 3, classes_per_task: int = 2, grouping: str = "consecutive",
             task_seed: int = 0, test_fraction: float = 0.25, max_len: int | None = None,
             unique: bool = False) -> TaskSet:
    """NameData as tasks of language groups.

    Returns a TaskSet whose pool x is (N, T) int64 character codes (0 = padding, right-padded),
    input_shape (T,), and info {"vocab_size": 59, "max_len": T, "alphabet": ALPHABET,
    "dropped_chars": n, "truncated_names": n}. T = max_len, or the longest name of the whole
    folder when null (20 for the official data), so T does not depend on the chosen tasks.
    unique=True keeps one copy of each name per language (Arabic.txt repeats most of its names).
    Each task's sample split is a fixed stratified random split (test_fraction).
    """
    if max_len is not None and max_len < 1:
        raise ConfigError(f"dataset.max_len={max_len} must be >= 1 or null")
    root = require("namedata", dataset_dir(data_dir, FOLDER), ["*.txt"], LAYOUT, SOURCE, download)
    raw = read_languages(root)
    languages = list(raw)
    names, ys, dropped, emptied = [], [], 0, []
    for c, lang in enumerate(languages):
        seen = set()
        for n in raw[lang]:
            a, d = fold(n)
            dropped += d
            if not a:
                emptied.append(f"{n!r} in {lang}.txt")
            if not a or (unique and a in seen):
                continue
            seen.add(a)
            names.append(a)
            ys.append(c)
    if emptied:
        warn(f"namedata: {len(emptied)} names have no character left in the alphabet after folding to ASCII "
             f"and are left out (e.g. {emptied[0]}): transliterate them in the file to keep them")
    longest = max((len(n) for n in names), default=1)
    t = max_len or longest
    truncated = sum(len(n) > t for n in names)
    if truncated:
        warn(f"namedata: {truncated} of {len(names)} names are longer than dataset.max_len={t} and are cut to "
             f"their first {t} characters (the longest has {longest}): dataset.max_len=null keeps every name whole")
    groups = plan_groups(list(range(len(languages))), classes_per_task=classes_per_task, grouping=grouping,
                         train_tasks=train_tasks, unseen_tasks=unseen_tasks, task_seed=task_seed, name="namedata")
    y = np.asarray(ys, dtype=np.int64)
    keep = np.isin(y, sorted({c for g in groups for c in g}))
    x = encode([n for n, k in zip(names, keep) if k], t)
    info = {"vocab_size": VOCAB_SIZE, "max_len": t, "alphabet": ALPHABET, "pad": PAD,
            "dropped_chars": int(dropped), "truncated_names": int(truncated)}
    return build_taskset("namedata", x, y[keep], languages, classes_per_task=classes_per_task,
                         grouping=grouping, train_tasks=train_tasks, unseen_tasks=unseen_tasks,
                         task_seed=task_seed, test_fraction=test_fraction, info=info, groups=groups)
