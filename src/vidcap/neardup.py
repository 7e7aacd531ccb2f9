"""Near-duplicate captions across a dataset: captions that are near copies of many others (LVD-2M#4 found
~4k copies of one caption), not only the exact copies the `duplicate` flag catches.

Each caption becomes the set of its word 2-grams (lower-cased); MinHash LSH (datasketch) proposes pairs
whose Jaccard similarity is likely at least `THRESHOLD`, the exact Jaccard of the two sets confirms each
pair, and confirmed pairs join clusters (union-find). Identical texts are hashed once. A caption whose
cluster holds `MIN_SIZE` or more clips gets the `near_duplicate` flag (unless it is flagged `duplicate`,
an exact copy, already); every ok row gets its cluster's
size (`near_dup_size`, 1 for a caption like no other) and clustered rows a cluster number
(`near_dup_cluster`, 0 for the largest cluster).
"""

from __future__ import annotations

import re
from collections import Counter

import pandas as pd

from .checks import DUPLICATE, is_empty, join_flags, parse_flags

NEAR_DUP = "near_duplicate"
THRESHOLD = 0.6  # word 2-grams: one word changed in an 18-word caption keeps 0.79 shared, two keep ~0.6
MIN_SIZE = 3  # as for exact duplicates: two clips of one static shot may honestly share a caption
NUM_PERM = 128
_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str, n: int = 2) -> frozenset[str]:
    """The caption's word n-grams (the whole word list for shorter captions)."""
    words = _WORD.findall(str(text).lower())
    if len(words) < n:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


def cluster_labels(texts, threshold: float = THRESHOLD, num_perm: int = NUM_PERM) -> list[int]:
    """A cluster number per text (texts with the same number are near copies, chained); -1 for empty text.
    Numbers are the position of the cluster's first text among the distinct shingle sets."""
    from datasketch import MinHash, MinHashLSH

    sets = [None if is_empty(t) else shingles(t) for t in texts]
    index: dict[frozenset, int] = {}
    for s in sets:
        if s:
            index.setdefault(s, len(index))
    uniq = list(index)
    parent = list(range(len(uniq)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    hashes = MinHash.bulk([[g.encode("utf-8") for g in s] for s in uniq], num_perm=num_perm, seed=1)
    # candidates are confirmed with the exact Jaccard below, so the bands are tuned against misses, not
    # against false candidates (those only cost a set intersection)
    # (32 bands of 4 rows: a pair at Jaccard 0.6 is proposed with p = 0.99, at 0.3 with p = 0.23)
    lsh = MinHashLSH(num_perm=num_perm, params=(num_perm // 4, 4))
    for i, (s, mh) in enumerate(zip(uniq, hashes, strict=False)):
        for j in lsh.query(mh):
            ri, rj = find(i), find(j)
            if ri != rj and jaccard(s, uniq[j]) >= threshold:
                parent[max(ri, rj)] = min(ri, rj)
        lsh.insert(i, mh)
    return [-1 if not s else find(index[s]) for s in sets]


def add_near_dup_columns(df: pd.DataFrame, threshold: float = THRESHOLD, min_size: int = MIN_SIZE):
    """(results with `near_dup_cluster`, `near_dup_size` and the `near_duplicate` flag, summary figures);
    (df, None) when there is no text column or datasketch is missing (said once on stderr)."""
    if "text" not in df.columns:
        return df, None
    try:
        import datasketch  # noqa: F401
    except ImportError:
        import sys

        print("vidcap: note: near-duplicate captions were not looked for (pip install datasketch).", file=sys.stderr)
        return df, None
    out = df.copy()
    ok = out["status"].astype(str).eq("ok") if "status" in out.columns else pd.Series(True, index=out.index)
    texts = [t if good else None for t, good in zip(out["text"], ok, strict=False)]
    labels = cluster_labels(texts, threshold)
    sizes = Counter(lab for lab in labels if lab >= 0)
    size = [sizes[lab] if lab >= 0 else None for lab in labels]
    # number clusters by size, largest first, so cluster 0 is the one to look at
    order = {
        lab: k
        for k, lab in enumerate(sorted((lab for lab in sizes if sizes[lab] > 1), key=lambda lab: (-sizes[lab], lab)))
    }
    out["near_dup_cluster"] = pd.array([order.get(lab) for lab in labels], dtype="Int64")
    out["near_dup_size"] = pd.array(size, dtype="Int64")
    if "flags" not in out.columns:
        out["flags"] = ""
    flags = []
    for cell, n in zip(out["flags"], size, strict=False):
        kept = [f for f in parse_flags(cell) if f != NEAR_DUP]
        near = n is not None and n >= min_size and DUPLICATE not in kept  # an exact copy says so already
        flags.append(join_flags(kept + ([NEAR_DUP] if near else [])))
    out["flags"] = flags
    big = sorted((int(sizes[lab]) for lab in order), reverse=True)
    summary = {
        "clusters": len(order),
        "rows_in_clusters": int(sum(big)),
        "largest": big[:5],
        "flagged": sum(NEAR_DUP in parse_flags(f) for f in flags),
    }
    return out, summary
