"""SimVP's encoder layout as a rule the config checks without torch (`run --print-config` stays quick)."""
from __future__ import annotations


def n_s_problem(n_s: int) -> str | None:
    """Why SimVP cannot build `n_s` encoder blocks as asked, else None. OpenSTL's sampling_generator
    makes `([False, True] * (N // 2))[:N]`: an odd N silently builds one block fewer and N < 2 none
    (its first block then indexes an empty list). svqbench keeps the reference's even sizes (every
    preset's) and refuses the rest, saying what the reference would have built."""
    if n_s >= 2 and n_s % 2 == 0:
        return None
    built = 2 * (max(n_s, 0) // 2)
    what = f"{built} blocks, the same model as n-s {built}" if built else "no encoder block"
    use = f"{built} or {built + 2}" if built else "2"
    return (f"n-s must be even and at least 2: SimVP (as OpenSTL) builds its encoder and decoder blocks in pairs, "
            f"a full-resolution one and one that halves the frame, so n-s {n_s} would build {what}; use n-s {use}")
