from pathlib import Path

from control.confdoc import render


def test_configuration_doc_is_current() -> None:
    doc = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == render(), (
        "run: .venv/bin/python -m control.confdoc > docs/configuration.md"
    )
    assert "`rtmp_port`" in render() and "BERRYLIVE_RELAY_GOP_MAX_FRAMES" in render()
