"""The corpus split shared by the tokenizer, the training script and the evaluations.

One definition of "held-out" so that the tokenizer, the models and every later
perplexity number (ours and the reference's) see exactly the same text:
  * test (never trained on, not even by the tokenizer): all of austen_persuasion.txt
    and the last 5% of lines of kjv.txt and of web_bible.txt;
  * val (early stopping only; the tokenizer does see it): the last 2% of lines of
    every training file;
  * train: the rest.
Run as a script to write the held-out texts to files (for eval_perplexity.py and tests).
"""
import argparse
import pathlib

HELDOUT_FILE = "austen_persuasion.txt"
HELDOUT_TAIL = {"kjv.txt": 0.05, "web_bible.txt": 0.05}
VAL_TAIL = 0.02


def _read(path):
    # Bytes as they are (read_text would translate \r\n), so every tool sees the same text.
    return pathlib.Path(path).read_bytes().decode("utf-8")


def split_tail(text, frac):
    """(head, tail): the tail is the last `frac` of the lines, cut at a line boundary."""
    lines = text.splitlines(keepends=True)
    cut = len(lines) - int(len(lines) * frac)
    return "".join(lines[:cut]), "".join(lines[cut:])


def corpus_files(data_dir):
    files = sorted(pathlib.Path(data_dir).glob("*.txt"))
    if not files:
        raise SystemExit(f"no *.txt corpora in {data_dir}")
    return files


def load_split(data_dir):
    """Return dict with 'train', 'val', 'test': lists of (name, text), in file-name order."""
    out = {"train": [], "val": [], "test": []}
    for f in corpus_files(data_dir):
        text = _read(f)
        if f.name == HELDOUT_FILE:
            out["test"].append((f.stem, text))
            continue
        if f.name in HELDOUT_TAIL:
            text, tail = split_tail(text, HELDOUT_TAIL[f.name])
            out["test"].append((f.stem + "_tail", tail))
        text, val = split_tail(text, VAL_TAIL)
        out["train"].append((f.stem, text))
        out["val"].append((f.stem + "_val", val))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(pathlib.Path(__file__).resolve().parents[3] / "shared/data/corpora"))
    ap.add_argument("--write-heldout", metavar="DIR", help="write each held-out text to DIR/heldout_<name>.txt")
    a = ap.parse_args()
    split = load_split(a.data_dir)
    for part, docs in split.items():
        print(f"{part:5s} {sum(len(t) for _, t in docs):>9d} chars  " + ", ".join(n for n, _ in docs))
    if a.write_heldout:
        d = pathlib.Path(a.write_heldout)
        d.mkdir(parents=True, exist_ok=True)
        for name, text in split["test"]:
            (d / f"heldout_{name}.txt").write_text(text, encoding="utf-8")
            print("wrote", d / f"heldout_{name}.txt")


if __name__ == "__main__":
    main()
