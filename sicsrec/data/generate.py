"""Generated datasets in the NineRec release layout, with planted, documented structure.

Each item has three hidden attributes: a *category* (written into its English title, never
into its cover), a *colour* (painted on its cover, never written in its title) and a
popularity. A user's next item is drawn from the previous one by one of four rules:

* ``id_signal``    — one of the previous item's ``successors`` (random items, fixed per item):
  learnable from item IDs only, invisible to content;
* ``skip_signal``  — one of the ``successors`` of the item *two* back: a signal that a model
  looking only at the last item (a transition count) cannot see, but a sequence model can;
* ``text_signal``  — an item of the category that follows the previous item's category in a
  fixed category cycle: visible in titles, and to IDs through co-occurrence;
* ``image_signal`` — an item of the colour that follows the previous item's colour in a
  fixed colour cycle: visible in covers (not in titles);
* otherwise        — an item by popularity (the noise floor a popularity model captures).

A cover shows its colour and a white bar at a height set by the category, so titles and covers
share the category (text-to-image alignment can learn it) while the colour is the cover's own.

All signals live in the *order* of a sequence: shuffling every sequence destroys them (up to
co-occurrence). ``covers="noise"`` paints colours unrelated to the colour attribute — a
negative control for the image path. Files written to ``out``: ``<name>_item.csv``
(id, Chinese-field, English title), ``<name>_pair.csv`` (user, item, timestamp),
``<name>_cover/<id>.jpg``, and ``<name>_attributes.csv`` (the hidden attributes, for tests).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np

from sicsrec.io import atomic_path, write_json_atomic

CATEGORIES = [
    ("noodles", "ramen", "udon"),
    ("pizza", "flatbread", "calzone"),
    ("dumplings", "wontons", "gyoza"),
    ("barbecue", "grill", "skewers"),
    ("cake", "pastry", "dessert"),
    ("soup", "broth", "stew"),
    ("salad", "greens", "vegetables"),
    ("seafood", "shrimp", "crab"),
    ("curry", "masala", "spices"),
    ("sushi", "sashimi", "maki"),
    ("burger", "sandwich", "slider"),
    ("tea", "coffee", "latte"),
]
ADJECTIVES = [
    "amazing",
    "cheap",
    "homemade",
    "giant",
    "spicy",
    "secret",
    "classic",
    "quick",
    "street",
    "midnight",
    "budget",
    "luxury",
    "tiny",
    "famous",
    "hidden",
    "weekend",
]
FILLERS = [
    "challenge",
    "review",
    "recipe",
    "vlog",
    "taste test",
    "tour",
    "for beginners",
    "in 5 minutes",
    "at home",
    "vs restaurant",
    "part 2",
    "live",
    "compilation",
    "first try",
    "explained",
    "ranking",
]
COLOURS = [
    (220, 40, 40),
    (40, 170, 60),
    (40, 80, 220),
    (230, 200, 40),
    (160, 60, 200),
    (40, 200, 210),
    (240, 130, 30),
    (120, 120, 120),
]


def generate(
    out: str | Path,
    users: int = 2000,
    items: int = 300,
    seed: int = 0,
    name: str = "Gen",
    categories: int = 8,
    colours: int = 6,
    successors: int = 2,
    id_signal: float = 0.5,
    text_signal: float = 0.25,
    image_signal: float = 0.15,
    skip_signal: float = 0.0,
    mean_length: float = 8.0,
    max_length: int = 40,
    covers: Literal["signal", "noise", "none"] = "signal",
    cover_size: int = 24,
) -> Path:
    """Write a generated dataset to ``out`` and return the folder."""
    if not 0 <= id_signal + text_signal + image_signal + skip_signal <= 1:
        raise ValueError("id_signal + text_signal + image_signal + skip_signal must lie in [0, 1]")
    categories, colours = min(categories, len(CATEGORIES)), min(colours, len(COLOURS))
    params = dict(
        users=users,
        items=items,
        seed=seed,
        name=name,
        categories=categories,
        colours=colours,
        successors=successors,
        id_signal=id_signal,
        text_signal=text_signal,
        image_signal=image_signal,
        skip_signal=skip_signal,
        mean_length=mean_length,
        max_length=max_length,
        covers=covers,
        cover_size=cover_size,
    )
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    category = rng.integers(categories, size=items)
    colour = rng.integers(colours, size=items)
    popularity = 1.0 / (1.0 + rng.permutation(items)) ** 0.8
    popularity /= popularity.sum()
    successor = np.stack([rng.choice(items, size=successors, replace=False) for _ in range(items)])
    next_category, next_colour = rng.permutation(categories), rng.permutation(colours)
    by_category = [np.flatnonzero(category == c) for c in range(categories)]
    by_colour = [np.flatnonzero(colour == c) for c in range(colours)]

    def pick(pool: np.ndarray) -> int:
        if pool.size == 0:
            return int(rng.choice(items, p=popularity))
        w = popularity[pool]
        return int(rng.choice(pool, p=w / w.sum()))

    ids = [f"v{1000 + i}" for i in range(items)]
    with atomic_path(out / f"{name}_pair.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        clock = 1_600_000_000
        for u in range(users):
            length = min(max_length, 5 + int(rng.geometric(1.0 / max(1.0, mean_length - 4)) - 1))
            seq = [int(rng.choice(items, p=popularity))]
            while len(seq) < length:
                prev, r = seq[-1], rng.random()
                if r < id_signal:
                    nxt = int(rng.choice(successor[prev]))
                elif r < id_signal + text_signal:
                    nxt = pick(by_category[next_category[category[prev]]])
                elif r < id_signal + text_signal + image_signal:
                    nxt = pick(by_colour[next_colour[colour[prev]]])
                elif r < id_signal + text_signal + image_signal + skip_signal and len(seq) >= 2:
                    nxt = int(rng.choice(successor[seq[-2]]))
                else:
                    nxt = int(rng.choice(items, p=popularity))
                seq.append(nxt)
            for item in seq:
                clock += int(rng.integers(1, 600))
                writer.writerow([f"u{u}", ids[item], clock])

    with atomic_path(out / f"{name}_item.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for i in range(items):
            words = CATEGORIES[category[i]]
            title = (
                f"{ADJECTIVES[rng.integers(len(ADJECTIVES))]} {words[rng.integers(len(words))]} "
                f"{FILLERS[rng.integers(len(FILLERS))]}"
            )
            writer.writerow([ids[i], f"【{i}】{title}", title.capitalize()])

    with atomic_path(out / f"{name}_attributes.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "category", "colour", "popularity"])
        for i in range(items):
            writer.writerow([ids[i], int(category[i]), int(colour[i]), f"{popularity[i]:.6g}"])

    if covers != "none":
        _draw_covers(out / f"{name}_cover", ids, colour, category, categories, covers == "noise", cover_size, rng)
    write_json_atomic(out / "generation.json", params)
    return out


def _draw_covers(
    folder: Path,
    ids: list[str],
    colour: np.ndarray,
    category: np.ndarray,
    categories: int,
    noise: bool,
    size: int,
    rng: np.random.Generator,
) -> None:
    """A cover is painted in its colour, with a white bar whose height marks its category (the
    link between a title and its cover). ``noise`` paints a random colour and bar instead."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    band = max(1, size // categories)
    for i, item in enumerate(ids):
        c = rng.integers(len(COLOURS)) if noise else colour[i]
        k = rng.integers(categories) if noise else category[i]
        pixels = np.array(COLOURS[c], dtype=np.float32) + rng.normal(0, 20, size=(size, size, 3))
        pixels[k * band : (k + 1) * band] = 255.0
        with atomic_path(folder / f"{item}.jpg") as tmp:
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(tmp, format="JPEG", quality=90)
