"""Assertions shared by CLI tests."""


def one_error_line(err: str) -> str:
    """The single non-empty stderr line of a user error (``gensis: error: ...``), asserting there is only one."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("gensis: error: ")
    return lines[0]
