"""Randomly corrupted copies of a generated dataset fed to `sicsrec data prepare`: every run ends
in success or one of the project's own errors; an error names the corrupted line when it is in
the corrupted file; a success equals an independent reference parse, drop counts included."""

import csv
import io
import random
import shutil
from collections import defaultdict

import pytest

from sicsrec.cli import main
from sicsrec.data.generate import generate
from sicsrec.data.prepare import prepare
from sicsrec.errors import DataError

TRIALS = 60
SAFE_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789 \xff\xfe"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return generate(
        tmp_path_factory.mktemp("fuzz") / "Gen",
        users=40,
        items=25,
        seed=9,
        covers="none",
        mean_length=5.0,
        max_length=8,
    )


def corrupt(root, rng: random.Random) -> tuple[str, int | None]:
    """Apply one corruption; return (file name, 1-based line) of a single-line corruption."""
    name = rng.choice(["Gen_item.csv", "Gen_pair.csv"])
    path = root / name
    lines = path.read_bytes().splitlines(keepends=True)
    kind = rng.choice(["flip", "drop", "duplicate", "swap"])
    k = rng.randrange(len(lines))
    if kind == "flip":
        line = bytearray(lines[k])
        pos = rng.randrange(max(1, len(line) - 1))
        line[pos] = rng.choice(SAFE_BYTES)
        lines[k] = bytes(line)
        where = k + 1
    elif kind == "drop":
        for _ in range(rng.randint(1, 3)):
            lines.pop(rng.randrange(len(lines)))
        where = None
    elif kind == "duplicate":
        lines.insert(k, lines[k])
        where = None
    else:
        fields = lines[k].rstrip(b"\r\n").split(b",")
        if len(fields) >= 2:
            fields[0], fields[1] = fields[1], fields[0]
        lines[k] = b",".join(fields) + b"\n"
        where = k + 1
    path.write_bytes(b"".join(lines))
    return name, where


def reference_parse(root, min_seq_len=3):
    """An independent parse of the NineRec release layout (user, item, timestamp pairs)."""
    items = [row for row in csv.reader(io.StringIO((root / "Gen_item.csv").read_text("utf-8"))) if row]
    ids = [r[0] for r in items]
    assert len(set(ids)) == len(ids)
    known = set(ids)
    by_user = defaultdict(list)
    for n, row in enumerate(csv.reader(io.StringIO((root / "Gen_pair.csv").read_text("utf-8")))):
        user, item, stamp = row
        assert item in known
        by_user[user].append((float(stamp), n, item))
    sequences = {u: [i for _, _, i in sorted(v)] for u, v in by_user.items()}
    kept = {u: s for u, s in sequences.items() if len(s) >= min_seq_len}
    return ids, [r[2] for r in items], kept, len(sequences) - len(kept)


def harmless(root, rng: random.Random) -> None:
    """Changes that leave the data valid: interactions in another order (timestamps decide), and a
    letter changed inside an English title (free text)."""
    pair = root / "Gen_pair.csv"
    lines = pair.read_bytes().splitlines(keepends=True)
    rng.shuffle(lines)
    pair.write_bytes(b"".join(lines))
    items = root / "Gen_item.csv"
    lines = items.read_bytes().splitlines(keepends=True)
    k = rng.randrange(len(lines))
    line = bytearray(lines[k])
    start = line.rindex(b",") + 1  # the English title: letters and spaces only
    pos = rng.randrange(start, len(line.rstrip(b"\r\n")))
    line[pos] = rng.choice(b"abcdefghijklmnopqrstuvwxyz")
    lines[k] = bytes(line)
    items.write_bytes(b"".join(lines))


def check_against_reference(root, cache) -> None:
    data = prepare(root, cache_dir=cache)
    ids, titles, sequences, dropped = reference_parse(root)
    assert data.item_ids == ids and data.titles["en"] == titles
    assert (
        dict(zip(data.user_ids, ([data.item_ids[i - 1] for i in data.sequence(u)] for u in range(data.num_users))))
        == sequences
    )
    assert data.stats["dropped_users_too_short"] == dropped


@pytest.mark.parametrize("trial", range(4))
def test_untouched_and_harmlessly_changed_data_prepares(pristine, tmp_path, capsys, trial):
    """The other half of the fuzz test: a prepare that refused everything would pass that one."""
    root = tmp_path / "Gen"
    shutil.copytree(pristine, root)
    if trial:
        harmless(root, random.Random(trial))
    main(["data", "prepare", "--root", str(root), "--cache_dir", str(tmp_path / "cache")])
    assert "users" in capsys.readouterr().out
    check_against_reference(root, tmp_path / "cache")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_prepare_on_corrupted_data(pristine, tmp_path, capsys, trial):
    rng = random.Random(trial)
    root = tmp_path / "Gen"
    shutil.copytree(pristine, root)
    name, line = corrupt(root, rng)
    try:
        main(["data", "prepare", "--root", str(root), "--cache_dir", str(tmp_path / "cache")])
    except SystemExit as exit_:
        assert exit_.code == 2, "only the project's own errors may stop prepare"
        err = capsys.readouterr().err
        assert err.startswith("sicsrec: error: ") and "Traceback" not in err
        with pytest.raises(DataError) as caught:
            prepare(root, cache_dir=tmp_path / "cache")
        if line is not None and caught.value.path.endswith(name) and caught.value.line is not None:
            assert caught.value.line == line, (name, line, str(caught.value))
        return
    check_against_reference(root, tmp_path / "cache")
