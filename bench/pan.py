"""Card-number masking cost: `mask_text` on 1 KB, 100 KB and 1 MB, for three kinds of text.

    .venv/bin/python bench/pan.py [--repeat 3]

Linear means the cost per byte stays flat as the input grows 1000-fold (within the noise of a
shared machine; 1 KB fits the CPU caches and comes out cheaper per byte). The worst case is a
text that is one long run of digits (every position starts seven windows to check); log-like
text with card numbers sprinkled in is the common case; prose without long numbers takes the
regex's C-speed path only.
"""

from __future__ import annotations

import argparse
import random
import time

from paywatch.pan import mask_text

SIZES = (1_000, 100_000, 1_000_000)


def log_like(size: int, rng: random.Random) -> str:
    lines = []
    while sum(map(len, lines)) < size:
        lines.append(
            rng.choice(
                [
                    "order 2026112600000003 paid amount 1250 CNY at 2026-11-26T13:52:01Z\n",
                    "declined card 4111 1111 1111 1111 exp 12/27 cvv 737\n",
                    "callback https://pay.example/cb?card=5555555555554444&amount=100\n",
                    "tel +86 138 0013 8000, retry 3 of 5\n",
                ]
            )
        )
    return "".join(lines)[:size]


def digits(size: int, rng: random.Random) -> str:
    return "".join(rng.choice("0123456789 ") for _ in range(size))


def prose(size: int, rng: random.Random) -> str:
    words = ["payment", "channel", "callback", "order", "pending", "refund", "ok", "42"]
    return " ".join(rng.choice(words) for _ in range(size // 5))[:size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per size")
    args = parser.parse_args()
    rng = random.Random(14)
    print(f"{'text':<10}{'size':>10}{'best ms':>12}{'ns/byte':>10}")
    for name, make in (("log-like", log_like), ("digits", digits), ("prose", prose)):
        per_byte = []
        for size in SIZES:
            text = make(size, rng)
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                mask_text(text)
                best = min(best, time.perf_counter() - start)
            per_byte.append(best / size * 1e9)
            print(f"{name:<10}{size:>10}{best * 1e3:>12.2f}{per_byte[-1]:>10.0f}")
        ratios = f"1 MB/1 KB {per_byte[2] / per_byte[0]:.2f}, 1 MB/100 KB {per_byte[2] / per_byte[1]:.2f}"
        print(f"{name:<10}cost per byte, {ratios}")


if __name__ == "__main__":
    main()
