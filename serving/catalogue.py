"""The product catalogue: texts to encode before the first order for them arrives.

The model reads a short text per transaction (`riskops.features.contract.transaction_text`: product title,
product category, merchant category) and caches each distinct text's embedding; a text not in the
cache costs a MiniLM forward pass on the request path (~15-20 ms on this machine, the p99 of
single requests). A shop knows its products before they are bought, so its product feed can send
them ahead: ``POST /v1/catalogue`` with

    {"products": [{"product_title": "...", "product_category": "electronics",
                   "merchant_category": "consumer electronics"}, ...]}

The texts are kept in `<home>/catalogue.jsonl` (one JSON string per line, appended), encoded into
the served model (and a canary challenger) in small chunks on the model thread, between scoring
batches, and encoded by every model loaded later (start, hot swap, canary) with its own warm texts,
before it serves. A text is still scored correctly when it is not in the catalogue: it is
encoded on the request path, as before.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from riskops.features.contract import transaction_text
from serving.validation import Problem, RequestError

log = logging.getLogger(__name__)

PRODUCT_FIELDS = ("product_title", "product_category", "merchant_category")
MAX_PRODUCTS_PER_REQUEST = 5_000  # and the body stays under max_body_bytes (1 MiB): ~5,000 products
MAX_FIELD_CHARS = 512


def catalogue_products(payload: Any) -> list[dict]:
    """The product records of a body: {"products": [...]}; RequestError (400) otherwise."""
    if not isinstance(payload, dict) or "products" not in payload:
        raise RequestError(
            "expected {'products': [{'product_title': ..., 'product_category': ..., 'merchant_category': ...}]}"
        )
    extra = sorted(set(payload) - {"products"})
    if extra:
        raise RequestError(Problem(None, f"unknown top-level key(s) {extra}: send {{'products': [...]}}"))
    products = payload["products"]
    if not isinstance(products, list) or not products:
        raise RequestError(Problem("products", "must be a non-empty list of product objects"))
    if len(products) > MAX_PRODUCTS_PER_REQUEST:
        raise RequestError(
            Problem("products", f"{len(products)} products exceed the limit of {MAX_PRODUCTS_PER_REQUEST} per request"),
            status=413,
        )
    return products


def product_texts(products: Sequence[Any]) -> list[str]:
    """The model text of each product; every bad product and field named at once (400)."""
    problems: list[Problem] = []
    texts: list[str] = []
    for i, p in enumerate(products):
        if not isinstance(p, dict):
            problems.append(Problem(f"products[{i}]", f"must be an object, got {type(p).__name__}"))
            continue
        bad = False
        for f in PRODUCT_FIELDS:
            v = p.get(f)
            if not isinstance(v, str) or not v.strip():
                problems.append(Problem(f"products[{i}].{f}", "is required: a non-empty string"))
                bad = True
            elif len(v) > MAX_FIELD_CHARS:
                problems.append(Problem(f"products[{i}].{f}", f"longer than {MAX_FIELD_CHARS} characters"))
                bad = True
        if not bad:
            texts.append(transaction_text(p))
    if problems:
        raise RequestError(problems)
    return texts


class Catalogue:
    """The catalogue's distinct texts, in arrival order, persisted to an append-only JSONL file."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._texts: dict[str, None] = {}
        self._torn_tail = False  # the file ends mid-line (a crash): the next append starts a new line
        if self.path is not None and self.path.exists():
            self._texts = dict.fromkeys(self._read(self.path))
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell():
                    fh.seek(-1, os.SEEK_END)
                    self._torn_tail = fh.read(1) != b"\n"
            log.info("catalogue: %d product texts from %s", len(self._texts), self.path)

    @staticmethod
    def _read(path: Path) -> Iterable[str]:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    text = json.loads(line)
                except json.JSONDecodeError:  # a torn last line after a crash: skip it, keep the rest
                    log.warning("catalogue: %s line %d is not JSON, skipped", path, n)
                    continue
                if isinstance(text, str):
                    yield text

    def __len__(self) -> int:
        return len(self._texts)

    def texts(self) -> list[str]:
        with self._lock:
            return list(self._texts)

    def add(self, texts: Iterable[str]) -> list[str]:
        """Remember `texts`; returns those that were new (appended to the file first)."""
        with self._lock:
            new = [t for t in dict.fromkeys(texts) if t not in self._texts]
            if new and self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                data = "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in new).encode("utf-8")
                if self._torn_tail:
                    data = b"\n" + data
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                self._torn_tail = False
            self._texts.update(dict.fromkeys(new))
            return new
