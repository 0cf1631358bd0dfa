"""Shape and size strings from command lines and config files: ``1x3x224x224``, ``input=1x3x224x224``, ``224x160``.

Every parser raises :class:`~infership.runtime.errors.InvalidInputError` (a typo is bad input, not a failed
conversion) with a message that names what was expected and what was given.
"""

from __future__ import annotations

from infership.runtime.errors import InvalidInputError

__all__ = ["parse_hw", "parse_named_shape", "parse_shape"]


def parse_shape(text: str, *, what: str = "shape") -> tuple[int, ...]:
    """``"1x3x224x224"`` or ``"1,3,224,224"`` → ``(1, 3, 224, 224)``.

    Args:
        text: Positive integers separated by ``x`` or ``,`` (spaces around them are ignored).
        what: What the string is, for the error message (e.g. ``"--input-shape"``).

    Returns:
        The dimensions.

    Raises:
        InvalidInputError: Not a list of positive integers.
    """
    parts = [p.strip() for p in text.replace(",", "x").lower().split("x")]
    # A trailing separator ("1x3x") is forgiven; an empty part in the middle ("1xx3") is a typo.
    if parts and not parts[-1]:
        parts.pop()
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise InvalidInputError(
            f"{what} {text!r}: expected positive integers separated by 'x' or ',', e.g. 1x3x224x224"
        )
    return dims


def parse_named_shape(
    text: str, *, what: str = "shape", require_name: bool = False
) -> tuple[str | None, tuple[int, ...]]:
    """``"input=1x3x224x224"`` or ``"input:1x3x224x224"`` → ``("input", (1, 3, 224, 224))``; a bare shape
    gives ``(None, shape)``.

    The name is split off at the last ``=`` (else the last ``:``), so input names that contain a colon
    (``"input:0=1x3x8x8"``, ``"input:0:1x3x8x8"``) keep it.

    Args:
        text: ``NAME=DIMS``, ``NAME:DIMS`` or ``DIMS``.
        what: What the string is, for the error message (e.g. ``"--shape"``).
        require_name: Refuse a bare shape.

    Returns:
        ``(name or None, dims)``.

    Raises:
        InvalidInputError: The dimensions are not positive integers, the name is empty, or a required name
            is missing.
    """
    example = "'x:1x3x224x224' (NAME:DIMS)" if require_name else "'1x3x224x224' or 'x:1x3x224x224'"
    sep = "=" if "=" in text else ":"
    name, found, dims = text.rpartition(sep)
    if not found:
        name, dims = "", text
    name = name.strip()
    if (found and not name) or (require_name and not name):
        raise InvalidInputError(f"{what} {text!r}: expected a shape like {example}")
    try:
        shape = parse_shape(dims, what=what)
    except InvalidInputError:
        raise InvalidInputError(f"{what} {text!r}: expected a shape like {example}") from None
    return (name or None), shape


def parse_hw(text: str, *, what: str = "size") -> tuple[int, int]:
    """``"224"`` → ``(224, 224)``; ``"224x160"`` → ``(224, 160)`` (height × width).

    Args:
        text: One positive integer (a square) or ``HxW``.
        what: What the string is, for the error message (e.g. ``"--crop"``).

    Returns:
        ``(height, width)``.

    Raises:
        InvalidInputError: Not one or two positive integers separated by ``x``.
    """
    parts = [p.strip() for p in text.lower().split("x")]
    if len(parts) in (1, 2) and all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        h = int(parts[0])
        return h, int(parts[-1])
    raise InvalidInputError(f"{what} {text!r}: expected N or HxW with positive integers, e.g. 224 or 224x160")
