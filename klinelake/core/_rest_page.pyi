"""Types of the compiled REST page parser (klinelake/core/_rest_page.c)."""

def configure(
    min_ms: int,
    max_ms: int,
    max_trades: int,
    max_whole: int,
    max_frac: int,
    /,
) -> None: ...
def page_lines(
    body: bytes,
    fragments: tuple[bytes, ...],
    step: int,
    anchor: int,
    check_anchor: bool,
    /,
) -> tuple[list[int], list[bytes]] | None: ...
